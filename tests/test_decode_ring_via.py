"""The via-response assignment (decode/ring.py) against a plain walk of the same rule."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blktrace_xen.decode.ring import _assign_via_response

Arrays = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]


def walk(
    answered: np.ndarray[Any, Any],
    req_id: np.ndarray[Any, Any],
    rsp_id: np.ndarray[Any, Any],
    rsp_op: np.ndarray[Any, Any],
    q_snap: np.ndarray[Any, Any],
    s_snap: np.ndarray[Any, Any],
) -> Arrays:
    """The rule one event at a time: requests of a snapshot before its responses;
    a response answers a full request in flight with its id, else the oldest
    waiting via_response request."""
    out_id = np.zeros(len(answered), np.uint64)
    out_op = np.zeros(len(answered), np.uint8)
    ok = np.zeros(len(answered), dtype=bool)
    inflight: dict[int, int] = {}
    waiting: deque[int] = deque()
    qi = si = 0
    while qi < len(q_snap) or si < len(s_snap):
        if qi < len(q_snap) and (si >= len(s_snap) or q_snap[qi] <= s_snap[si]):
            if answered[qi]:
                waiting.append(qi)
            else:
                inflight[int(req_id[qi])] = inflight.get(int(req_id[qi]), 0) + 1
            qi += 1
        else:
            rid = int(rsp_id[si])
            if inflight.get(rid, 0):
                inflight[rid] -= 1
            elif waiting:
                j = waiting.popleft()
                out_id[j], out_op[j], ok[j] = rid, rsp_op[si], True
            si += 1
    return out_id, out_op, ok


@st.composite
def captures(draw: st.DrawFn) -> dict[str, np.ndarray[Any, Any]]:
    nq = draw(st.integers(0, 60))
    nr = draw(st.integers(0, 60))
    snaps = draw(st.integers(1, 12))
    ids = draw(st.integers(1, 8))  # few ids: they repeat and collide
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return {
        "answered": rng.random(nq) < draw(st.sampled_from([0.0, 0.5, 0.75, 1.0])),
        "req_id": rng.integers(0, ids, nq).astype(np.uint64),
        "rsp_id": rng.integers(0, ids, nr).astype(np.uint64),
        "rsp_op": rng.integers(0, 8, nr).astype(np.uint8),
        "q_snap": np.sort(rng.integers(0, snaps, nq)),
        "s_snap": np.sort(rng.integers(0, snaps, nr)),
    }


@settings(derandomize=True, max_examples=400, deadline=None)
@given(captures())
def test_vectorised_assignment_equals_the_walk(cap: dict[str, np.ndarray[Any, Any]]) -> None:
    got = _assign_via_response(**cap)
    want = walk(**cap)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == w.dtype


def test_large_polled_capture_equals_the_walk() -> None:
    # A polled capture: 3 in 4 requests answered before a snapshot saw them whole.
    rng = np.random.default_rng(7)
    nq = 20_000
    q_snap = np.sort(rng.integers(0, 5_000, nq))
    s_snap = np.sort(q_snap + rng.integers(0, 3, nq))
    cap = {
        "answered": rng.random(nq) < 0.75,
        "req_id": rng.integers(0, 32, nq).astype(np.uint64),
        "rsp_id": rng.integers(0, 32, nq).astype(np.uint64),
        "rsp_op": rng.integers(0, 3, nq).astype(np.uint8),
        "q_snap": q_snap,
        "s_snap": s_snap,
    }
    got = _assign_via_response(**cap)
    want = walk(**cap)
    assert got[2].sum() > nq // 2
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)

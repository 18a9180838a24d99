"""ring-reattach-reset: a backend re-attached to a live ring with counters behind its producers."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from blktrace_xen.analyses import RULES, AnalysisOptions
from blktrace_xen.analyses.rebind import SILENT_AFTER_BIND_NS
from blktrace_xen.streams import Streams
from tests import frames

OPTS = AnalysisOptions()
MS = 1_000_000


def found(s: Streams) -> pl.DataFrame:
    return RULES["ring-reattach-reset"].fn(s, OPTS).lazy().collect()


def ring_map(ns: int, req_cons: int, rsp_prod_pvt: int, side: str = "back") -> dict[str, Any]:
    """A ``ring_map`` control row as the xentrace builder writes it."""
    return {
        "ns": ns,
        "kind": "ring_map",
        "side": side,
        "value": req_cons,
        "detail": f"ring_page_order=0 protocol=2 req_prod={req_cons} "
        f"rsp_prod={rsp_prod_pvt} backend_domid=0",
    }


def io(n: int, answered: int, *, t0: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` requests at idx 0.., 1 ms apart; the first ``answered`` answered 0.5 ms later."""
    reqs = [{"ns": t0 + i * MS, "idx": i, "id": i % 16, "sector_number": 8 * i} for i in range(n)]
    rsps = [{"ns": t0 + i * MS + MS // 2, "idx": i, "id": i % 16} for i in range(answered)]
    return reqs, rsps


def rebind(n: int, answered: int, req_cons: int, rsp_prod_pvt: int, **extra: Any) -> Streams:
    """A ring mapped fresh, ``n`` requests, unbind at n ms, bind at n + 3 ms with the counters."""
    reqs, rsps = io(n, answered)
    control = [
        ring_map(-MS, 0, 0),
        {"ns": n * MS, "kind": "ring_unmap"},
        ring_map((n + 3) * MS, req_cons, rsp_prod_pvt),
        *extra.pop("control", []),
    ]
    return frames.streams(
        requests=reqs + extra.pop("requests", []),
        responses=rsps,
        control=control,
        rings=[{}],
        **extra,
    )


def test_init_on_a_far_along_ring_fires_and_says_it_halts() -> None:
    f = found(rebind(67, 57, 0, 0))
    assert f.height == 1
    row = f.row(0, named=True)
    assert row["severity"] == "high" and row["ns"] == 70 * MS
    assert (row["domid"], row["vdev"], row["queue"]) == (1, 51712, 0)
    ev = json.loads(row["evidence"])
    assert ev["evidence_from"] == "ring_map"
    assert (ev["req_cons"], ev["rsp_prod_pvt"]) == (0, 0)
    assert (ev["obs_req_prod"], ev["obs_rsp_prod"]) == (67, 57)
    assert ev["unread"] == 67 and ev["rsp_lag"] == 57
    msg = row["message"]
    assert "req_cons 0 / rsp_prod_pvt 0" in msg and "req_prod 67 / rsp_prod 57" in msg
    assert "halts" in msg and "70.0 ms" in msg


def test_init_early_in_the_ring_life_fires_as_a_re_read() -> None:
    # 10 published, 8 answered: fewer than a ring size, so the backend re-reads old slots.
    f = found(rebind(10, 8, 0, 0))
    assert f.height == 1
    assert "re-reads answered slots" in f["message"][0]
    assert json.loads(f["evidence"][0])["unread"] == 10


def test_producers_from_snapshots_count_when_later_than_events() -> None:
    # Events stop at 5 requests; a later snapshot shows the ring at 40 / 38.
    s = rebind(5, 5, 5, 5, snapshots=[{"ns": 7 * MS, "req_prod": 40, "rsp_prod": 38}])
    ev = json.loads(found(s)["evidence"][0])
    assert (ev["obs_req_prod"], ev["obs_rsp_prod"]) == (40, 38)


def test_attach_at_the_shared_rsp_prod_is_silent() -> None:
    # BACK_RING_ATTACH: req_cons = rsp_prod_pvt = rsp_prod, requests still pending.
    assert found(rebind(67, 57, 57, 57)).is_empty()
    # Counters ahead of what was seen (responses lost from the trace) are not a reset.
    assert found(rebind(67, 57, 60, 60)).is_empty()


def test_a_fresh_ring_is_silent() -> None:
    reqs, rsps = io(5, 5, t0=MS)
    s = frames.streams(requests=reqs, responses=rsps, control=[ring_map(0, 0, 0)], rings=[{}])
    assert found(s).is_empty()


def test_a_frontend_restart_before_the_map_is_silent() -> None:
    for restart in (
        {"ns": 68 * MS, "kind": "resume", "side": "front"},
        {"ns": 68 * MS, "kind": "xenbus_state", "side": "front", "value": 1},
        ring_map(68 * MS, 0, 0, side="front"),
    ):
        assert found(rebind(67, 57, 0, 0, control=[restart])).is_empty(), restart
    # A restart *before* the producers were last seen does not excuse the map.
    early = {"ns": -MS // 2, "kind": "xenbus_state", "side": "front", "value": 3}
    assert found(rebind(67, 57, 0, 0, control=[early])).height == 1


def test_a_next_request_at_the_map_counters_means_an_unseen_restart() -> None:
    restarted = [{"ns": 71 * MS, "idx": 0, "id": 0, "session": 1}]
    assert found(rebind(67, 67, 0, 0, requests=restarted)).is_empty()
    continuing = [{"ns": 71 * MS, "idx": 67, "id": 3}]
    assert found(rebind(67, 57, 0, 0, requests=continuing)).height == 1


def back_state(ns: int, value: int) -> dict[str, Any]:
    return {"ns": ns, "kind": "xenbus_state", "side": "back", "value": value}


def capture(after_bind: list[tuple[int, int, int]], *, bind_ms: int = 40) -> Streams:
    """Snapshots only: the ring at 30 / 28, backend Closed at 35 ms, Connected at ``bind_ms``;
    ``after_bind`` (ns, req_prod, rsp_prod) snapshots follow; the capture ends at 100 ms."""
    snaps = [{"ns": t * MS, "req_prod": t, "rsp_prod": max(t - 2, 0)} for t in range(31)]
    snaps += [{"ns": ns, "req_prod": q, "rsp_prod": p} for ns, q, p in after_bind]
    control = [
        back_state(0, 4),
        {"ns": 0, "kind": "xenbus_state", "side": "front", "value": 4},
        back_state(35 * MS, 6),
        back_state(bind_ms * MS, 4),
        {"ns": 100 * MS, "kind": "xenstore", "side": "back"},
    ]
    return frames.streams(snapshots=snaps, control=control)


def test_capture_backend_silent_after_the_bind_fires() -> None:
    f = found(capture([(41 * MS, 33, 28)]))
    assert f.height == 1
    row = f.row(0, named=True)
    ev = json.loads(row["evidence"])
    assert ev["evidence_from"] == "snapshots"
    assert (ev["bind_ns"], ev["closed_ns"], ev["until_ns"]) == (40 * MS, 35 * MS, 100 * MS)
    assert (ev["bind_rsp_prod"], ev["last_req_prod"], ev["pending"]) == (28, 33, 5)
    assert row["ns_end"] == 100 * MS
    assert "cannot see its req_cons" in row["message"]


def test_capture_backend_answering_after_the_bind_is_silent() -> None:
    assert found(capture([(41 * MS, 33, 28), (42 * MS, 33, 33)])).is_empty()


def test_capture_silence_shorter_than_the_threshold_is_silent() -> None:
    bind_ms = 100 - SILENT_AFTER_BIND_NS // MS + 1
    assert found(capture([], bind_ms=bind_ms)).is_empty()
    assert found(capture([], bind_ms=bind_ms - 2)).height == 1


def test_capture_with_a_frontend_reconnect_between_is_silent() -> None:
    s = capture([(41 * MS, 33, 28)])
    front = frames.make_control(
        [{"ns": 37 * MS, "kind": "xenbus_state", "side": "front", "value": 1}]
    )
    s2 = Streams(
        requests=s.requests,
        responses=s.responses,
        io=s.io,
        snapshots=s.snapshots,
        pairing=s.pairing,
        control=pl.concat([s.control, front]).sort("ns", maintain_order=True),
    )
    assert found(s2).is_empty()


def test_capture_variant_defers_to_a_traced_ring_map() -> None:
    s = capture([(41 * MS, 33, 28)])
    mapped = frames.make_control([ring_map(40 * MS, 28, 28)])
    s2 = Streams(
        requests=s.requests,
        responses=s.responses,
        io=s.io,
        snapshots=s.snapshots,
        pairing=s.pairing,
        control=pl.concat([s.control, mapped]).sort("ns", maintain_order=True),
    )
    assert found(s2).is_empty()


def test_healthy_ring_is_silent() -> None:
    assert found(frames.healthy_streams()).is_empty()

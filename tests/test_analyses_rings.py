"""The sorted-array answers of analyses/rings.py agree with the polars formulation they replace."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import polars as pl
import pytest

from blktrace_xen.analyses import (
    RULES,
    AnalysisOptions,
    analyze,
    btt_table,
    indices,
    rings,
    run_rules,
    timeline,
)
from blktrace_xen.analyses.timeline import clear
from blktrace_xen.errors import ModelUsageError
from blktrace_xen.streams import Streams
from tests import frames


@contextmanager
def _rings(
    *, enabled: bool = True, loop_groups: int | None = None, chunk: int | None = None
) -> Iterator[None]:
    saved = rings.ENABLED, rings.LOOP_GROUPS, rings.CHUNK_ROWS
    rings.ENABLED = enabled
    if loop_groups is not None:
        rings.LOOP_GROUPS = loop_groups
    if chunk is not None:
        rings.CHUNK_ROWS = chunk
    try:
        yield
    finally:
        rings.ENABLED, rings.LOOP_GROUPS, rings.CHUNK_ROWS = saved
        clear()


def _streams(seed: int, *, one_session: bool = False) -> Streams:
    """Rings with interleaved and null sessions, null indices, ties, orphans and snapshots.

    ``one_session``: every event in session 0 (the summary's shortcut).
    """
    rng = np.random.default_rng(seed)
    reqs: list[dict[str, Any]] = []
    rsps: list[dict[str, Any]] = []
    snaps: list[dict[str, Any]] = []
    for r in range(int(rng.integers(1, 6))):
        ring = {"domid": 1 + r // 2, "vdev": 51712 + 16 * (r % 2), "queue": r % 3}
        idx = int(rng.integers(0, 3)) * (2**32 - 30)
        t = int(rng.integers(0, 100))
        for _ in range(int(rng.integers(0, 80))):
            t += int(rng.integers(0, 3))  # ties within and across kinds
            session = None if rng.random() < 0.05 else int(rng.integers(0, 3))
            if one_session:
                session = 0
            if rng.random() < 0.05:
                idx -= int(rng.integers(1, 40))
            if rng.random() < 0.03:
                idx += int(rng.integers(40, 2000))
            row = {**ring, "session": session, "ns": t, "id": int(rng.integers(0, 8))}
            op = int(rng.choice([0, 1, 1, 6]))
            reqs.append(
                {
                    **row,
                    "idx": None if rng.random() < 0.05 else idx % 2**32,
                    "operation": op,
                    "indirect_op": None if op != 6 or rng.random() < 0.3 else 1,
                }
            )
            idx += 1
            if rng.random() < 0.9:
                rsps.append(
                    {
                        **row,
                        "ns": t + int(rng.integers(0, 6)),
                        "idx": None
                        if rng.random() < 0.05
                        else (idx - 1 + int(rng.integers(-2, 3))) % 2**32,
                    }
                )
            if rng.random() < 0.05:  # an answer to nothing the trace saw (an orphan)
                rsps.append({**row, "id": 99, "ns": t + 1, "idx": idx % 2**32})
        if r == 1 and rng.random() < 0.5:
            snaps.append({**ring, "ns": t, "req_prod": 3, "rsp_prod": 1})
    rsps.sort(key=lambda row: row["ns"])
    tables: dict[str, Any] = {"snapshots": snaps} if snaps else {}
    return frames.streams(requests=reqs, responses=rsps, **tables)


def _summary(s: Streams) -> pl.DataFrame:
    try:
        return indices._event_summary(s).rings.sort("ring_key")
    finally:
        clear()


@pytest.mark.parametrize("one_session", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_event_summary_matches_polars(seed: int, one_session: bool) -> None:
    s = _streams(seed, one_session=one_session)
    with _rings(enabled=False):
        want = _summary(s)
    for loop_groups, chunk in ((None, None), (0, 3)):
        with _rings(loop_groups=loop_groups, chunk=chunk):
            assert _summary(s).equals(want)


@pytest.mark.parametrize("seed", range(40))
def test_btt_depth_matches_polars(seed: int) -> None:
    s = _streams(seed)
    for by in (
        ("domid", "vdev", "queue", "operation"),
        ("queue", "vdev", "domid"),
        ("domid", "operation"),
    ):
        # Only the depth columns: polars' iops and mb_s differ in the last bit from
        # run to run (the same query, rings.py or not).
        cols = [*by, "count", "qd_mean", "qd_p50", "qd_p99", "qd_max"]
        with _rings(enabled=False):
            want = btt_table(s, by=by).select(cols)
        for loop_groups, chunk in ((None, None), (0, 3)):
            with _rings(loop_groups=loop_groups, chunk=chunk):
                assert btt_table(s, by=by).select(cols).equals(want), by


@pytest.mark.parametrize("seed", range(40))
def test_out_of_order_waits_match_polars(seed: int) -> None:
    s = _streams(seed)
    rule = RULES["out-of-order-completion"]
    with _rings(enabled=False):
        want = rule.fn(s, AnalysisOptions()).lazy().collect().sort(pl.all())
    for loop_groups in (None, 0):
        with _rings(loop_groups=loop_groups):
            got = rule.fn(s, AnalysisOptions()).lazy().collect().sort(pl.all())
        assert got.equals(want)


def test_some_inputs_have_what_the_paths_differ_on() -> None:
    """The random inputs above do hold orphans, null sessions and null indices."""
    s = [_streams(seed) for seed in range(40)]
    assert any(x.pairing.filter(pl.col("kind") == "orphan_response").height for x in s)
    assert any(x.requests["session"].null_count() for x in s)
    assert any(x.responses["idx"].null_count() for x in s)
    assert any(x.snapshots.height for x in s)
    assert any(x.io["reorder"].fill_null(0).abs().max() for x in s)


def test_nearest_rank_is_polars_nearest_quantile() -> None:
    rng = np.random.default_rng(0)
    for n in [*range(1, 300), 1001, 4096, 65_537]:
        values = np.sort(rng.integers(-1000, 1000, n))
        for q in (0.01, 0.5, 0.9, 0.99, 1.0):
            rank = int(rings.nearest_rank(np.array([n]), q)[0])
            assert values[rank] == pl.Series(values).quantile(q, "nearest")


def test_group_stats_match_polars() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(1, 5000))
        ngroups = int(rng.integers(1, 20))
        groups = np.concatenate([np.arange(ngroups), rng.integers(0, ngroups, n)])
        values = rng.integers(-(2**30), 2**30, len(groups))
        stats = rings.group_stats(groups, ngroups, values, (0.5, 0.99))
        assert stats is not None
        want = (
            pl.DataFrame({"g": groups, "v": values})
            .group_by("g")
            .agg(
                pl.len().alias("n"),
                pl.col("v").mean().alias("mean"),
                pl.col("v").quantile(0.5, "nearest").alias("p50"),
                pl.col("v").quantile(0.99, "nearest").alias("p99"),
                pl.col("v").max().alias("max"),
            )
            .sort("g")
        )
        assert stats.count.tolist() == want["n"].to_list()
        assert (stats.total / stats.count).tolist() == want["mean"].to_list()
        assert stats.quantiles[0].tolist() == want["p50"].to_list()
        assert stats.quantiles[1].tolist() == want["p99"].to_list()
        assert stats.max.tolist() == want["max"].to_list()


def test_group_stats_decline_what_a_float_sum_may_round() -> None:
    groups = np.zeros(2, dtype=np.int64)
    assert rings.group_stats(groups, 1, np.array([2**62, 1]), (0.5,)) is None


@pytest.mark.parametrize("inclusive", [False, True])
def test_count_before_both_searches_match_brute_force(inclusive: bool) -> None:
    rng = np.random.default_rng(2)
    ngroups = 7
    a_codes = rng.integers(0, ngroups, 500).astype(np.uint16)
    b_codes = rng.integers(0, ngroups, 400).astype(np.uint16)
    a_ns = rng.integers(0, 50, 500)  # each frame in time order, with ties
    a_ns.sort()
    b_ns = rng.integers(0, 50, 400)
    b_ns.sort()
    a, b = rings.Grouped.of(a_codes, ngroups), rings.Grouped.of(b_codes, ngroups)
    a_sorted, b_sorted = a_ns[a.order], b_ns[b.order]
    want = np.array(
        [
            np.sum((b_codes == c) & ((b_ns <= t) if inclusive else (b_ns < t)))
            for c, t in zip(a.codes, a_sorted, strict=True)
        ]
    )
    for loop_groups in (0, 100):
        with _rings(loop_groups=loop_groups):
            got = rings.count_before(a, a_sorted, b, b_sorted, inclusive=inclusive)
        assert got.tolist() == want.tolist()


def test_chunks_cover_every_group_once() -> None:
    g = rings.Grouped.of(np.array([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4], dtype=np.uint16), 5)
    with _rings(chunk=3):
        ranges = rings.chunks([g])
    assert ranges[0][0] == 0 and ranges[-1][1] == 5
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(g.starts[hi] - g.starts[lo] <= 3 or hi == lo + 1 for lo, hi in ranges)


@pytest.mark.parametrize("seed", range(12))
def test_analyze_equals_the_two_calls_and_groups_once(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = _streams(seed)
    built: list[int] = []
    of = rings.RingGroups.of

    def counted(req: pl.DataFrame, rsp: pl.DataFrame) -> rings.RingGroups:
        built.append(req.height)
        return of(req, rsp)

    monkeypatch.setattr(rings.RingGroups, "of", counted)
    alone = run_rules(s), btt_table(s)
    assert len(built) == 2  # the index summary and btt's depth, each its own
    for chunk in (None, 7):
        built.clear()
        with _rings(chunk=chunk):
            both = analyze(s)
        assert len(built) == 1
        assert not timeline._cache and not timeline._owner  # nothing outlives the call
        for a, b in zip(alone, both, strict=True):
            assert a.equals(b)


def test_analyze_scope_does_not_nest_and_errors_before_work() -> None:
    s = _streams(1)
    with timeline.shared(s), pytest.raises(RuntimeError):
        analyze(s)
    assert not timeline._cache and not timeline._scope
    with pytest.raises(ModelUsageError, match="no-such-rule"):
        analyze(s, rules=["no-such-rule"])


def test_ring_groups_code_only_known_rings() -> None:
    req = frames.make_requests([{"ns": 1, "id": 1, "domid": 3}, {"ns": 2, "id": 2, "domid": 1}])
    rsp = frames.make_responses([{"ns": 3, "id": 1, "domid": 3}])
    g = rings.RingGroups.of(req, rsp)
    assert g.req.order.tolist() == [1, 0] and g.rsp.order.tolist() == [0]
    codes = g.codes_of(rings.ring_keys(rsp))
    assert codes is not None and codes.tolist() == [1]
    other = frames.make_responses([{"ns": 3, "id": 1, "domid": 2}])
    assert g.codes_of(rings.ring_keys(other)) is None
    empty = rings.RingGroups.of(req.clear(), rsp.clear())
    assert empty.codes_of(rings.ring_keys(rsp)) is None
    assert empty.codes_of(rings.ring_keys(rsp.clear())) is not None

"""The analyses consume the streams' one pairing, and pair a hand-built Streams only once."""

from __future__ import annotations

import polars as pl

from blktrace_xen.analyses import RULES, AnalysisOptions, btt_table, run_rules, timeline
from blktrace_xen.streams import Streams
from blktrace_xen.streams.pairing import pair
from tests import frames

OPTS = AnalysisOptions()


def _raw() -> Streams:
    """Requests and responses only: no io, no pairing facts (a Streams built by hand)."""
    s = frames.streams(
        requests=[{"ns": 0, "id": 5, "idx": 0}, {"ns": 1, "id": 6, "idx": 1, "operation": 1}],
        responses=[
            {"ns": 4, "id": 5, "idx": 0},
            {"ns": 9, "id": 5, "idx": 1},
            {"ns": 10, "id": 6, "idx": 2, "operation": 0},
        ],
    )
    return Streams(requests=s.requests, responses=s.responses)


def test_hand_built_streams_are_paired_by_the_streams_pairing() -> None:
    raw = _raw()
    io, facts = pair(raw.requests, raw.responses)
    got_io, got_facts = timeline.paired(raw)
    assert got_io.equals(io) and got_facts.equals(facts)
    timeline.clear()
    found = run_rules(raw, rules=["duplicate-response", "response-op-mismatch"])
    assert found["rule"].to_list() == ["duplicate-response", "response-op-mismatch"]


def test_the_streams_own_pairing_is_used_not_recomputed() -> None:
    # A pairing table that says something pair() would not: the rules report it as given.
    raw = _raw()
    io, facts = pair(raw.requests, raw.responses)
    only_mismatch = facts.filter(pl.col("kind") == "op_mismatch")
    s = Streams(requests=raw.requests, responses=raw.responses, io=io, pairing=only_mismatch)
    assert RULES["duplicate-response"].fn(s, OPTS).lazy().collect().is_empty()
    assert RULES["response-op-mismatch"].fn(s, OPTS).lazy().collect().height == 1
    timeline.clear()


def test_lifo_reuse_in_one_snapshot_pairs_as_the_streams_do() -> None:
    # One polled snapshot sees id 3 answered and re-issued (LIFO reuse) at one
    # ns. A "requests first" tie rule would put the write before the read's
    # response; the streams' protocol order answers the read first.
    s = frames.streams(
        requests=[
            {"ns": 0, "id": 3, "idx": 0, "operation": 0},
            {"ns": 7, "id": 3, "idx": 1, "operation": 1},
        ],
        responses=[
            {"ns": 7, "id": 3, "idx": 0, "operation": 0},
            {"ns": 8, "id": 3, "idx": 1, "operation": 1},
        ],
    )
    assert s.io["rsp_ns"].to_list() == [7, 8]
    rules = ["duplicate-response", "response-unknown-id", "response-op-mismatch"]
    found = run_rules(s, rules=rules)
    assert found.is_empty()


def test_shared_frames_do_not_outlive_a_run() -> None:
    s = frames.healthy_streams()
    run_rules(s)
    assert not timeline._cache and not timeline._owner
    btt_table(s)
    assert not timeline._cache and not timeline._owner

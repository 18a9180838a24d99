"""Pairing rules: unknown id, duplicate, op mismatch, bad status."""

from __future__ import annotations

import json

import polars as pl

from blktrace_xen.analyses import RULES, AnalysisOptions
from blktrace_xen.streams import Streams
from tests import frames

OPTS = AnalysisOptions()


def found(rule: str, s: Streams) -> pl.DataFrame:
    return RULES[rule].fn(s, OPTS).lazy().collect()


CONNECT = [{"ns": -5, "kind": "connect", "side": "back"}]


def test_unknown_id_fires_once_ring_start_was_observed() -> None:
    s = frames.streams(
        requests=[{"ns": 0, "id": 1, "idx": 0}],
        responses=[{"ns": 1, "id": 1, "idx": 0}, {"ns": 2, "id": 77, "idx": 1}],
        control=CONNECT,
    )
    f = found("response-unknown-id", s)
    assert f["id"].to_list() == [77]
    assert "answers no request in flight" in f["message"][0]


def test_unknown_id_tolerates_requests_issued_before_the_trace() -> None:
    # No ring start in the trace: up to nr_ents unmatched responses are pre-trace requests.
    rsps = [{"ns": i, "id": i, "idx": i} for i in range(32)]
    s = frames.streams(responses=rsps)
    assert found("response-unknown-id", s).is_empty()
    s33 = frames.streams(responses=[*rsps, {"ns": 40, "id": 99, "idx": 32}])
    assert found("response-unknown-id", s33)["id"].to_list() == [99]


def test_duplicate_response_fires_and_id_reuse_is_fine() -> None:
    dup = frames.streams(
        requests=[{"ns": 0, "id": 5}],
        responses=[{"ns": 4_000_000, "id": 5, "idx": 0}, {"ns": 9_000_000, "id": 5, "idx": 1}],
    )
    f = found("duplicate-response", dup)
    assert f.height == 1 and (f["ns"][0], f["ns_end"][0]) == (4_000_000, 9_000_000)
    assert json.loads(f["evidence"][0])["first_ns"] == 4_000_000
    reuse = frames.streams(
        requests=[{"ns": 0, "id": 5}, {"ns": 5, "id": 5}],
        responses=[{"ns": 4, "id": 5}, {"ns": 9, "id": 5}],
    )
    assert found("duplicate-response", reuse).is_empty()


def test_op_mismatch_and_indirect_echo() -> None:
    bad = frames.streams(
        requests=[{"ns": 0, "id": 3, "operation": 1}],
        responses=[{"ns": 5, "id": 3, "operation": 0}],
    )
    f = found("response-op-mismatch", bad)
    assert f.height == 1 and json.loads(f["evidence"][0])["request_op"] == 1
    # An indirect request is answered with its indirect_op: legal.
    ind = frames.streams(
        requests=[
            {
                "ns": 0,
                "id": 3,
                "operation": 6,
                "indirect_op": 1,
                "nr_segments": 20,
                "nr_sectors": 160,
            }
        ],
        responses=[{"ns": 5, "id": 3, "operation": 1}],
    )
    assert found("response-op-mismatch", ind).is_empty()


def test_op_mismatch_skips_requests_seen_only_via_response() -> None:
    s = frames.streams(
        requests=[{"ns": 0, "id": 3, "operation": 1, "seen": "via_response"}],
        responses=[{"ns": 5, "id": 3, "operation": 0}],
    )
    assert found("response-op-mismatch", s).is_empty()


def test_bad_status() -> None:
    s = frames.streams(
        responses=[{"ns": 1, "id": 1, "status": 7}, {"ns": 2, "id": 2, "status": -2}]
    )
    f = found("response-bad-status", s)
    assert f["id"].to_list() == [1]
    ok = frames.streams(responses=[{"ns": 1, "id": 1, "status": s} for s in (0, -1, -2)])
    assert found("response-bad-status", ok).is_empty()


def test_one_snapshot_with_two_cycles_of_an_id_is_not_a_duplicate() -> None:
    # A polled capture: request, response, next request, next response of id 2 at one ns.
    s = frames.streams(
        requests=[{"ns": 7, "id": 2, "operation": 0}, {"ns": 7, "id": 2, "operation": 1}],
        responses=[{"ns": 7, "id": 2, "operation": 0}, {"ns": 7, "id": 2, "operation": 1}],
    )
    assert found("duplicate-response", s).is_empty()
    assert found("response-op-mismatch", s).is_empty()
    # A third response in that snapshot is one too many.
    s3 = frames.streams(
        requests=[{"ns": 7, "id": 2}, {"ns": 7, "id": 2}],
        responses=[{"ns": 7, "id": 2}, {"ns": 7, "id": 2}, {"ns": 7, "id": 2}],
    )
    assert found("duplicate-response", s3).height == 1


def test_old_responses_in_a_first_snapshot_are_not_duplicates() -> None:
    s = frames.streams(
        requests=[{"ns": 5, "id": 2}],
        responses=[
            {"ns": 0, "id": 2, "idx": 1},
            {"ns": 0, "id": 2, "idx": 9},
            {"ns": 6, "id": 2, "idx": 10},
        ],
    )
    assert found("duplicate-response", s).is_empty()

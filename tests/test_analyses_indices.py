"""Index rules: implausible producer, producer regression, response overflow."""

from __future__ import annotations

import json

import polars as pl

from blktrace_xen.analyses import RULES, AnalysisOptions, run_rules
from tests import frames

OPTS = AnalysisOptions()


def found(rule: str, s: object) -> pl.DataFrame:
    return RULES[rule].fn(s, OPTS).lazy().collect()  # type: ignore[arg-type]


def test_implausible_producer_fires_on_snapshot_episode() -> None:
    s = frames.streams(
        snapshots=[
            {"ns": 0, "req_prod": 1000, "rsp_prod": 998},
            {"ns": 10, "req_prod": 1040, "rsp_prod": 0},  # seed 002: rsp restarted at 0
            {"ns": 20, "req_prod": 1041, "rsp_prod": 0},
            {"ns": 30, "req_prod": 1041, "rsp_prod": 1041},
        ]
    )
    f = found("implausible-producer", s)
    assert f.height == 1
    row = f.row(0, named=True)
    assert (row["ns"], row["ns_end"]) == (10, 20)
    ev = json.loads(row["evidence"])
    assert ev["max_outstanding"] == 1041 and ev["observations"] == 2
    assert "blkback halts" in row["message"]


def test_implausible_producer_from_events_without_snapshots() -> None:
    s = frames.streams(
        requests=[{"ns": 0, "idx": 100, "id": 1}, {"ns": 20, "idx": 200, "id": 2}],
        responses=[{"ns": 10, "idx": 100, "id": 1}],
    )
    f = found("implausible-producer", s)
    assert f.height == 1
    assert json.loads(f["evidence"][0])["source"] == "events"


def test_implausible_producer_silent_on_full_but_legal_ring() -> None:
    s = frames.streams(snapshots=[{"ns": 0, "req_prod": 2**32 - 5, "rsp_prod": 2**32 - 37}])
    assert found("implausible-producer", s).is_empty()  # exactly 32 outstanding across the wrap


def test_producer_regression_fires_when_only_rsp_prod_goes_back() -> None:
    s = frames.streams(
        snapshots=[
            {"ns": 0, "req_prod": 1030, "rsp_prod": 1024},
            {"ns": 5, "req_prod": 1031, "rsp_prod": 0},
        ]
    )
    f = found("producer-regression", s)
    assert f.height == 1
    ev = json.loads(f["evidence"][0])
    assert (ev["producer"], ev["from"], ev["to"]) == ("rsp_prod", 1024, 0)


def test_producer_regression_silent_on_fresh_ring_and_wrap() -> None:
    s = frames.streams(
        snapshots=[
            {"ns": 0, "req_prod": 2**32 - 1, "rsp_prod": 2**32 - 2},
            {"ns": 5, "req_prod": 3, "rsp_prod": 1},  # wrapped forwards, not backwards
            {"ns": 9, "req_prod": 1, "rsp_prod": 0},  # both reset: a fresh shared ring
        ]
    )
    assert found("producer-regression", s).is_empty()


def test_producer_regression_from_event_indices_in_one_session() -> None:
    s = frames.streams(requests=[{"ns": 0, "idx": 50, "id": 1}, {"ns": 5, "idx": 40, "id": 2}])
    f = found("producer-regression", s)
    assert f.height == 1 and f["idx"][0] == 40


def test_response_overflow_fires_and_is_silent_when_equal() -> None:
    bad = frames.streams(snapshots=[{"ns": 0, "req_prod": 32, "rsp_prod": 40}])
    f = found("response-overflow", bad)
    assert f.height == 1 and json.loads(f["evidence"][0])["max_ahead"] == 8
    good = frames.streams(snapshots=[{"ns": 0, "req_prod": 40, "rsp_prod": 40}])
    assert found("response-overflow", good).is_empty()


def test_response_overflow_from_events() -> None:
    s = frames.streams(
        requests=[{"ns": 0, "idx": 7, "id": 1}],
        responses=[{"ns": 1, "idx": 7, "id": 1}, {"ns": 2, "idx": 8, "id": 9}],
    )
    f = found("response-overflow", s)
    assert f.height == 1 and f["ns"][0] == 2


def test_healthy_streams_raise_nothing() -> None:
    assert run_rules(frames.healthy_streams()).is_empty()

"""Lifecycle rules: incomplete at end / disconnect / destroy, late responses, grants, handoff."""

from __future__ import annotations

import json

import polars as pl

from blktrace_xen.analyses import RULES, AnalysisOptions
from blktrace_xen.streams import Streams
from tests import frames

OPTS = AnalysisOptions()


def found(rule: str, s: Streams) -> pl.DataFrame:
    return RULES[rule].fn(s, OPTS).lazy().collect()


def test_incomplete_at_trace_end_is_info_and_grouped() -> None:
    s = frames.streams(
        requests=[
            {"ns": 0, "id": 1},
            {"ns": 1, "id": 2, "sector_number": 8},
            {"ns": 2, "id": 3, "sector_number": 16},
        ],
        responses=[{"ns": 3, "id": 1}],
    )
    f = found("incomplete-at-trace-end", s)
    assert f.height == 1 and f["severity"][0] == "info"
    assert json.loads(f["evidence"][0])["pending"] == 2
    done = frames.streams(requests=[{"ns": 0, "id": 1}], responses=[{"ns": 3, "id": 1}])
    assert found("incomplete-at-trace-end", done).is_empty()


def test_incomplete_at_disconnect_seed_000() -> None:
    s = frames.streams(
        requests=[
            {"ns": 0, "id": 9, "sector_number": 4096},
            {"ns": 1, "id": 1, "sector_number": 8},
        ],
        responses=[{"ns": 2, "id": 1}],
        control=[{"ns": 5, "kind": "disconnect_done"}],
    )
    f = found("incomplete-at-disconnect", s)
    assert f["id"].to_list() == [9]
    assert "never answered before the disconnect" in f["message"][0]
    assert found("incomplete-at-trace-end", s).is_empty()


def test_incomplete_at_disconnect_silent_when_reissued_after_resume() -> None:
    s = frames.streams(
        requests=[
            {"ns": 0, "id": 9, "sector_number": 4096},
            {"ns": 10, "id": 0, "sector_number": 4096, "session": 1},
        ],
        responses=[{"ns": 12, "id": 0, "session": 1}],
        control=[
            {"ns": 5, "kind": "suspend", "side": "front"},
            {"ns": 8, "kind": "resume", "side": "front"},
        ],
    )
    assert found("incomplete-at-disconnect", s).is_empty()


def test_incomplete_at_destroy_uses_domain_wide_events() -> None:
    s = frames.streams(
        requests=[{"ns": 0, "id": 2, "sector_number": 64}],
        control=[
            {"ns": 5, "kind": "domain_destroy", "vdev": None, "queue": None, "side": "hypervisor"}
        ],
    )
    f = found("incomplete-at-destroy", s)
    assert f.height == 1 and json.loads(f["evidence"][0])["why"] == "destroy"
    assert found("incomplete-at-disconnect", s).is_empty()


def test_response_after_disconnect_seed_000() -> None:
    s = frames.streams(
        requests=[{"ns": 0, "id": 4}, {"ns": 1, "id": 5}],
        responses=[{"ns": 2, "id": 5}, {"ns": 7_000_000, "id": 4}],
        control=[{"ns": 5_000_000, "kind": "ring_unmap"}],
    )
    f = found("response-after-disconnect", s)
    assert f["id"].to_list() == [4] and f["severity"][0] == "critical"
    assert json.loads(f["evidence"][0])["late_ns"] == 2_000_000


def test_response_after_reconnect_is_fine() -> None:
    s = frames.streams(
        requests=[{"ns": 0, "id": 4}],
        responses=[{"ns": 9, "id": 4}],
        control=[{"ns": 5, "kind": "ring_unmap"}, {"ns": 6, "kind": "ring_map"}],
    )
    assert found("response-after-disconnect", s).is_empty()


def test_grants_held_at_destroy() -> None:
    grants = [{"ns": i, "op": "map", "balance": i + 1} for i in range(3)]
    s = frames.streams(
        grants=grants, control=[{"ns": 10, "kind": "domain_destroy", "vdev": None, "queue": None}]
    )
    f = found("grants-held-at-destroy", s)
    assert f.height == 1 and json.loads(f["evidence"][0])["final_balance"] == 3
    released = [*grants, *({"ns": 11 + i, "op": "unmap", "balance": 2 - i} for i in range(3))]
    ok = frames.streams(
        grants=released, control=[{"ns": 10, "kind": "domain_destroy", "vdev": None, "queue": None}]
    )
    assert found("grants-held-at-destroy", ok).is_empty()


def test_migration_handoff_io_seed_004() -> None:
    handoff = [{"ns": 10, "kind": "handoff", "vdev": None, "queue": None, "side": "toolstack"}]
    s = frames.streams(
        requests=[{"ns": 0, "id": 1, "operation": 1}, {"ns": 1, "id": 2, "operation": 0}],
        responses=[{"ns": 12, "id": 1, "operation": 1}, {"ns": 13, "id": 2, "operation": 0}],
        control=handoff,
    )
    f = found("migration-handoff-io", s)
    assert f.height == 1 and f["severity"][0] == "critical"
    assert json.loads(f["evidence"][0]) | {} == {
        "handoff_ns": 10,
        "late": 2,
        "writes": 1,
        "first_ns": 12,
        "last_ns": 13,
    }
    reads = frames.streams(
        requests=[{"ns": 0, "id": 2, "operation": 0}],
        responses=[{"ns": 13, "id": 2, "operation": 0}],
        control=handoff,
    )
    assert found("migration-handoff-io", reads)["severity"].to_list() == ["medium"]
    drained = frames.streams(
        requests=[{"ns": 0, "id": 1}], responses=[{"ns": 5, "id": 1}], control=handoff
    )
    assert found("migration-handoff-io", drained).is_empty()

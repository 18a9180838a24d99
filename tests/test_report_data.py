"""Assembling the report's data: exact counts, wrap-safe occupancy, bounded plots."""

from __future__ import annotations

import json

import polars as pl
import pytest

from blktrace_xen import schema
from blktrace_xen.errors import SchemaError
from blktrace_xen.report.data import ReportOptions, assemble, op_name, ring_label
from blktrace_xen.report.sample import sample_streams
from blktrace_xen.streams import Streams

RING = {"domid": 1, "vdev": 51712, "queue": 0}


def _io(rows: list[dict[str, object]]) -> pl.DataFrame:
    return schema.conform(pl.DataFrame([{**RING, "session": 0, **r} for r in rows]), "io")


def _finding(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        **RING,
        "rule": "r1",
        "severity": "high",
        "session": 0,
        "ns": 0,
        "message": "m",
        "evidence": "{}",
        "confidence": 1.0,
    }
    return {**base, **kw}


def _findings(rows: list[dict[str, object]]) -> pl.DataFrame:
    if not rows:
        return schema.empty("findings")
    return schema.conform(pl.DataFrame(rows, infer_schema_length=None), "findings")


def _three_requests() -> Streams:
    io = _io(
        [
            {
                "id": 0,
                "operation": 0,
                "req_ns": 1000,
                "rsp_ns": 5000,
                "latency_ns": 4000,
                "status": 0,
                "outcome": "completed",
            },
            {
                "id": 1,
                "operation": 1,
                "req_ns": 2000,
                "rsp_ns": 3000,
                "latency_ns": 1000,
                "status": -1,
                "outcome": "completed",
            },
            {"id": 2, "operation": 1, "req_ns": 4000, "outcome": "trace_end"},
        ]
    )
    return Streams(io=io)


def test_inflight_is_the_exact_step_function() -> None:
    data = assemble(_three_requests(), _findings([]))
    ring = data.rings[0]
    # +1 at 1000, +1 at 2000, -1 at 3000, +1 at 4000, -1 at 5000 (t0 = 1000 ns).
    assert ring.inflight["inflight"].to_list() == [1, 2, 1, 2, 1]
    assert ring.inflight["t_s"].to_list() == pytest.approx([0, 1e-6, 2e-6, 3e-6, 4e-6])
    assert ring.inflight["exact"].all()


def test_summary_and_ring_table_counts_are_exact() -> None:
    data = assemble(_three_requests(), _findings([]))
    s = data.summary
    assert (s["requests"], s["completed"], s["unanswered"], s["errors"]) == (3, 2, 1, 1)
    assert s["span_s"] == pytest.approx(4e-6)
    row = data.ring_table.row(0, named=True)
    assert row["ring"] == "vbd/1/51712/q0"
    assert (row["requests"], row["completed"], row["unanswered"], row["errors"]) == (3, 2, 1, 1)
    assert row["max_inflight"] == 2
    ops = {r["op"]: r for r in data.op_table.iter_rows(named=True)}
    assert ops["read"]["p50_us"] == 4.0
    assert ops["write"]["requests"] == 2
    assert ops["write"]["completed"] == 1
    assert data.verdict.startswith("No findings on 1 ring (3 requests")


def test_occupancy_is_wrap_safe() -> None:
    snaps = schema.conform(
        pl.DataFrame(
            {
                **{k: [v, v] for k, v in RING.items()},
                "snap": [0, 1],
                "ns": [0, 10],
                "req_prod": [2**32 - 1, 3],  # req_prod wrapped past 2**32
                "rsp_prod": [2**32 - 4, 2**32 - 2],
            }
        ),
        "snapshots",
    )
    data = assemble(Streams(snapshots=snaps), _findings([]))
    assert data.rings[0].occupancy["occupancy"].to_list() == [3, 5]


def test_domain_wide_control_events_show_on_each_ring_of_the_domain() -> None:
    io = _io([{"id": 0, "operation": 0, "req_ns": 0, "rsp_ns": 10, "latency_ns": 10}])
    io2 = io.with_columns(pl.lit(51728, pl.UInt32).alias("vdev"))
    control = schema.conform(
        pl.DataFrame(
            {
                "domid": [1, 1, 2],
                "vdev": [None, 51712, None],
                "ns": [20, 5, 7],
                "kind": ["domain_destroy", "disconnect_request", "domain_destroy"],
                "side": ["hypervisor", "front", "hypervisor"],
            }
        ),
        "control",
    )
    data = assemble(Streams(io=pl.concat([io, io2]), control=control), _findings([]))
    kinds = {r.label: r.control["kind"].to_list() for r in data.rings}
    assert kinds == {
        "vbd/1/51712/q0": ["disconnect_request", "domain_destroy"],
        "vbd/1/51728/q0": ["domain_destroy"],
    }


def test_findings_are_counted_exactly_and_evidence_parsed() -> None:
    rows = [
        _finding(rule="a", severity="info", ns=30, evidence=json.dumps({"x": 1})),
        _finding(rule="b", severity="critical", ns=20, evidence="not json"),
        _finding(rule="a", severity="info", ns=10, domid=None, vdev=None, queue=None),
    ]
    data = assemble(_three_requests(), _findings(rows))
    s = data.summary
    assert s["findings_by_severity"] == {"info": 2, "low": 0, "medium": 0, "high": 0, "critical": 1}
    assert s["findings_by_rule"] == {"a": 2, "b": 1}
    assert s["rings_with_findings"] == 1
    # Ordered by time; the unattached finding is labelled, not dropped.
    assert [f.rule for f in data.findings] == ["a", "b", "a"]
    assert data.findings[0].ring == "(global)"
    assert data.findings[1].evidence == {"evidence": "not json"}
    assert data.findings[2].evidence == {"x": 1}
    assert data.findings[1].ring_anchor == "ring-0"
    assert (
        "1 critical, 2 info" in data.verdict and "most severe: b on vbd/1/51712/q0" in data.verdict
    )


def test_evidence_is_capped_per_rule_but_counts_are_not() -> None:
    rows = [_finding(rule="many", severity="low", ns=i) for i in range(50)]
    rows.append(_finding(rule="rare", severity="critical", ns=100))
    opts = ReportOptions(max_findings_per_rule=5, max_findings_detail=4)
    data = assemble(_three_requests(), _findings(rows), options=opts)
    assert data.summary["findings_total"] == 51
    assert len(data.findings) == 4
    assert [f.rule for f in data.findings].count("rare") == 1  # the worst is always shown
    table = dict(data.rule_table.select("rule", "count").iter_rows())
    assert table == {"many": 50, "rare": 1}


def test_plotted_rings_are_bounded_worst_first() -> None:
    streams, findings = sample_streams(2000, n_rings=6)
    opts = ReportOptions(max_rings=2)
    data = assemble(streams, findings, options=opts)
    assert data.ring_table.height == 6
    assert len(data.rings) == 2
    assert data.summary["requests"] == streams.io.height


def test_big_series_are_reduced_but_tables_stay_exact() -> None:
    streams, findings = sample_streams(60_000, n_rings=2)
    opts = ReportOptions(max_points=1000, point_budget=4000)
    data = assemble(streams, findings, options=opts)
    for ring in data.rings:
        assert 0 < ring.inflight.height <= 1000
        assert not ring.inflight["exact"].all()
        assert ring.occupancy.height <= 1000
    assert data.latency_hist["count"].sum() == streams.io["latency_ns"].is_not_null().sum()
    assert data.latency_time.group_by("op").len()["len"].max() <= opts.latency_buckets
    assert data.ring_table["requests"].sum() == streams.io.height
    max_inflight = data.ring_table["max_inflight"].to_list()
    assert max_inflight == [r.inflight["inflight"].max() for r in data.rings]


def test_verdicts_are_sorted_and_counted() -> None:
    verdicts = [
        {"logic": "b", "verdict": "passes", "violations": [], "caveats": []},
        {
            "logic": "a",
            "verdict": "fails",
            "violations": [
                {"invariant": "i2", "t_ns": 3000, **RING, "id": 1, "message": "late"},
                {"invariant": "i1", "t_ns": 2000, **RING, "id": 2, "message": "early"},
            ],
            "caveats": ["c"],
        },
    ]
    data = assemble(_three_requests(), _findings([]), verdicts=verdicts)
    assert [v.logic for v in data.verdicts] == ["a", "b"]
    a = data.verdicts[0]
    assert a.n_violations == 2 and a.by_invariant == {"i1": 1, "i2": 1}
    assert a.violations["message"].to_list() == ["early", "late"]
    assert a.violations["ring"][0] == "vbd/1/51712/q0"
    assert data.verdict.endswith("Replay: a fails (2 violations), b passes (0 violations).")


def test_bad_inputs_raise_the_projects_errors() -> None:
    with pytest.raises(SchemaError, match="findings"):
        assemble(_three_requests(), pl.DataFrame({"rule": ["x"]}))
    with pytest.raises(SchemaError, match="verdict"):
        assemble(_three_requests(), _findings([]), verdicts=[{"verdict": "fails"}])


def test_empty_streams_give_an_empty_but_valid_report() -> None:
    data = assemble(Streams(), _findings([]))
    assert data.summary["rings"] == 0 and data.rings == []
    assert data.verdict == "No findings on 0 rings (0 requests over 0.000 s)."


def test_names() -> None:
    assert ring_label(3, 51712, 1) == "vbd/3/51712/q1"
    assert (op_name(3), op_name(9), op_name(None)) == ("flush_diskcache", "op9", "unknown")

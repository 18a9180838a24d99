"""``blktrace-xen analyze`` over streams folders written from hand-built frames."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from blktrace_xen.cli import app
from blktrace_xen.streams.store import write_streams
from tests import frames

runner = CliRunner()


def _bad_folder(tmp_path: Path) -> Path:
    s = frames.streams(
        requests=[{"ns": 0, "id": 1}, {"ns": 1, "id": 2, "sector_number": 8}],
        responses=[{"ns": 3, "id": 2}, {"ns": 5, "id": 1, "status": 9}],
    )
    out = tmp_path / "bad"
    write_streams(s, out)
    return out


def test_json_output_has_findings_summary_and_btt(tmp_path: Path) -> None:
    res = runner.invoke(app, ["analyze", str(_bad_folder(tmp_path)), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert {f["rule"] for f in doc["findings"]} == {
        "response-bad-status",
        "out-of-order-completion",
    }
    assert doc["summary"]["by_severity"]["high"] == 1
    assert sum(r["count"] for r in doc["btt"]) == 2


def test_fail_on_exits_4_only_at_or_above(tmp_path: Path) -> None:
    folder = str(_bad_folder(tmp_path))
    assert runner.invoke(app, ["analyze", folder, "--json", "--fail-on", "high"]).exit_code == 4
    res = runner.invoke(app, ["analyze", folder, "--json", "--fail-on", "critical"])
    assert res.exit_code == 0, res.output


def test_rules_and_min_severity_select(tmp_path: Path) -> None:
    folder = str(_bad_folder(tmp_path))
    res = runner.invoke(app, ["analyze", folder, "--json", "--rules", "out-of-order-completion"])
    assert [f["rule"] for f in json.loads(res.stdout)["findings"]] == ["out-of-order-completion"]
    res = runner.invoke(app, ["analyze", folder, "--json", "--min-severity", "medium"])
    assert [f["rule"] for f in json.loads(res.stdout)["findings"]] == ["response-bad-status"]


def test_table_output_names_rule_and_ring(tmp_path: Path) -> None:
    res = runner.invoke(app, ["analyze", str(_bad_folder(tmp_path))], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert (
        "response-bad-status" in res.output and "d1/51712/q0" in res.output and "btt" in res.output
    )


def test_errors_are_one_line(tmp_path: Path) -> None:
    folder = str(_bad_folder(tmp_path))
    res = runner.invoke(app, ["analyze", folder, "--rules", "nope"])
    assert res.exit_code == 1 and res.stderr.strip().startswith("error: unknown rule(s) nope")
    res = runner.invoke(app, ["analyze", folder, "--fail-on", "urgent"])
    assert res.exit_code == 1 and "error:" in res.stderr
    res = runner.invoke(app, ["analyze", str(tmp_path / "missing.bin")])
    assert res.exit_code == 1 and res.stderr.startswith("error:")


def test_a_stock_trace_without_ring_events_is_said_so(realxen: Path, tmp_path: Path) -> None:
    # The real Xen 4.17.7 dump holds scheduler and grant events but no blkif ring events:
    # empty tables must not pass for a healthy ring.
    dump = str(realxen / "steady" / "trace-all.bin")
    res = runner.invoke(app, ["analyze", dump, "--cpu-mhz", "2596.125", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["btt"] == []
    assert "no blkif requests or responses in the inputs" in res.stderr
    with_traffic = runner.invoke(app, ["analyze", str(_bad_folder(tmp_path)), "--json"])
    assert "no blkif requests" not in with_traffic.stderr

"""info, ingest and dump on xentrace input, end to end through the Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from blktrace_xen.cli import app
from blktrace_xen.decode.xentrace import read_xentrace
from blktrace_xen.schema import EVENTS_SCHEMA, LOST_SCHEMA
from tests.conftest import ROOT

SAMPLE = ROOT / "formats" / "samples" / "small.xentrace"
runner = CliRunner()


def test_info_json_counts_the_sample() -> None:
    res = runner.invoke(app, ["info", str(SAMPLE), "--json", "--cpu-mhz", "1000"])
    assert res.exit_code == 0, res.output
    meta = json.loads(res.stdout)
    full = read_xentrace(SAMPLE, cpu_mhz=1000.0)
    assert meta["format"] == "xentrace"
    assert meta["records"] == full.events.height
    assert meta["cpus"] == [0, 1]
    assert meta["lost_records"] == 17 and meta["wrap_records"] == 1
    assert sum(meta["per_class"].values()) == meta["records"]
    assert meta["per_class"]["guest"] == full.events.filter(pl.col("class") == 0x800).height


def test_info_text_warns_about_default_mhz() -> None:
    res = runner.invoke(app, ["info", str(SAMPLE)])
    assert res.exit_code == 0, res.output
    assert "records      682" in res.stdout
    assert "2400" in res.stderr and res.stderr.count("warning:") == 1


def test_ingest_writes_parquet_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["ingest", str(SAMPLE), "-o", str(out), "--cpu-mhz", "1000"])
    assert res.exit_code == 0, res.output
    events = pl.read_parquet(out / "events.parquet")
    assert events.schema == EVENTS_SCHEMA
    assert events.equals(read_xentrace(SAMPLE, cpu_mhz=1000.0).events)
    lost = pl.read_parquet(out / "lost.parquet")
    assert lost.schema == LOST_SCHEMA and lost["count"].to_list() == [17]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["records"] == events.height and meta["lost_records"] == 17


def test_dump_names_known_events_and_prints_unknown_raw() -> None:
    res = runner.invoke(app, ["dump", str(SAMPLE), "--cpu-mhz", "1000"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == read_xentrace(SAMPLE, cpu_mhz=1000.0).events.height
    assert lines[0].startswith("  0.000000000 p")
    assert any(" sched_switch " in x for x in lines)
    assert any(" lost_records count=17 " in x for x in lines)
    assert any(" guest minor=0x123" in x for x in lines)
    head = runner.invoke(app, ["dump", str(SAMPLE), "-n", "3", "--cpu-mhz", "1000"])
    assert head.stdout.splitlines() == lines[:3]


def test_dump_unknown_event_is_raw(tmp_path: Path) -> None:
    from blktrace_xen.encode.xentrace import TraceRecord, write_xentrace

    path = tmp_path / "u.bin"
    write_xentrace(path, [TraceRecord(0, 10, 0x00ABC123, (7,))])
    res = runner.invoke(app, ["dump", str(path), "--cpu-mhz", "1000"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().endswith("event=0x00abc123 d0=0x00000007")


def test_bad_input_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "zeros.bin"
    bad.write_bytes(bytes(64))
    for cmd in (["info"], ["dump"], ["ingest", "-o", str(tmp_path / "o")]):
        for path in (bad, tmp_path / "missing.bin"):
            res = runner.invoke(app, [*cmd, str(path)])
            assert res.exit_code == 1, res.output
            assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
            assert str(path) in res.stderr

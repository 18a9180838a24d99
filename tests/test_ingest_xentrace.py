"""``ingest``'s Parquet equals the in-memory decode, across block boundaries."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import blktrace_xen.cli.commands.ingest as ingest_cmd
from blktrace_xen.cli import app
from blktrace_xen.decode.xentrace import iter_xentrace_chunks, read_xentrace
from blktrace_xen.schema import EVENTS_SCHEMA

runner = CliRunner()


def test_one_window_blocks_equal_whole_file_decode(realxen: Path) -> None:
    # chunk_records=1 puts every window in its own block: each block boundary
    # carries pending records (and lost-record ends) over to the next block.
    path = realxen / "steady" / "trace-all.bin"
    whole = read_xentrace(path, cpu_mhz=2596.125).events
    chunks = list(iter_xentrace_chunks(path, cpu_mhz=2596.125, chunk_records=1))
    assert len(chunks) > 30
    assert pl.concat(chunks).equals(whole)
    # (Losses, wraps and cross-CPU ties across one-window blocks: the property
    # test in test_decode_xentrace.py decodes with chunk_records=1 too.)


@pytest.mark.parametrize("chunk", [1, 1 << 18])
def test_ingest_parquet_equals_read_xentrace(
    realxen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    path = realxen / "steady" / "trace-all.bin"
    monkeypatch.setattr(ingest_cmd, "INGEST_CHUNK", chunk)
    out = tmp_path / "out"
    res = runner.invoke(app, ["ingest", str(path), "-o", str(out), "--cpu-mhz", "2596.125"])
    assert res.exit_code == 0, res.output
    events = pl.read_parquet(out / "events.parquet")
    assert events.schema == EVENTS_SCHEMA
    full = read_xentrace(path, cpu_mhz=2596.125)
    assert events.equals(full.events)
    assert pl.read_parquet(out / "lost.parquet").equals(full.lost)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["records"] == full.meta["records"] == events.height
    assert meta["lost_records"] == full.meta["lost_records"]

"""``ingest``'s Parquet equals the in-memory decode, across block boundaries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import blktrace_xen.cli.commands.ingest as ingest_cmd
from blktrace_xen.cli import app
from blktrace_xen.decode.xentrace import iter_xentrace_chunks, read_xentrace
from blktrace_xen.decode.xentrace_walk import scan_windows, walk_sequential
from blktrace_xen.errors import MalformedRecord
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


def test_prefetch_keeps_order_and_raises_the_workers_error() -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise MalformedRecord("xentrace", "bad", path="x.bin", offset=8)

    got: list[int] = []
    with pytest.raises(MalformedRecord, match="bad"):
        for x in ingest_cmd.prefetch(items(), depth=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_prefetch_stops_its_worker_when_the_consumer_stops() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    it = ingest_cmd.prefetch(items(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # joins the worker
    assert len(produced) <= 3 + 2 + 1  # taken, queued, and the one it was putting


def test_corrupt_record_mid_file_is_one_error_line(
    realxen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record far into the file claims more words than it has: the decode
    # worker meets it after earlier chunks went to the writer, and the command
    # still ends with one `error:` line naming the offset.
    src = realxen / "steady" / "trace-all.bin"
    data = bytearray(src.read_bytes())
    win = scan_windows(bytes(data))
    w = len(win.offset) * 3 // 4  # a late window
    body = np.frombuffer(data, dtype="<u4")[
        (win.offset[w] + 12) // 4 : (win.offset[w] + 12 + win.size[w]) // 4
    ]
    last = int(walk_sequential(body, 0)[-1])  # its last record ends at the window's end
    assert body[last] >> 28 != 0xF
    rec = win.offset[w] + 12 + last * 4
    data[rec + 3] |= 0xF0  # TSC and 7 extra words: now it runs into the next window
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(ingest_cmd, "INGEST_CHUNK", 1)
    res = runner.invoke(app, ["ingest", str(bad), "-o", str(tmp_path / "o"), "--cpu-mhz", "1000"])
    assert res.exit_code == 1, res.output
    assert res.stderr.count("error:") == 1, res.stderr
    assert "runs past the end of" in res.stderr and f"offset {rec:#x}" in res.stderr
    assert "Traceback" not in res.output

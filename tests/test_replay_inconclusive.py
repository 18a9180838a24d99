"""A replay that drives no I/O through the logics is inconclusive, never a pass."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from blktrace_xen.cli import app
from blktrace_xen.encode.xentrace import TraceRecord, write_xentrace

# TRC_SCHED_SWITCH-like records: what a stock xentrace dump holds (no TRC_GUEST blkif events)
_STOCK = [
    TraceRecord(cpu=0, tsc=1_000 + i, event=0x0002_1001 + (i % 3), extra=(i, 0)) for i in range(40)
]


def test_a_stock_trace_alone_replays_as_inconclusive(tmp_path: Path) -> None:
    dump = tmp_path / "stock.xentrace"
    write_xentrace(dump, _STOCK)
    args = [
        "replay",
        str(dump),
        "--logic",
        "blkback-rebind-init",
        "--logic",
        "blkback-rebind-attach",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 5, res.output
    assert "inconclusive: the inputs hold no blkif request or response" in res.output
    assert "passes" not in res.output
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 5
    verdict = json.loads(res.output[res.output.index("{") :])
    assert verdict["inconclusive"].startswith("the inputs hold no blkif request")

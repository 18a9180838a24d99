"""info and dump accept every input kind: xentrace dumps, pcapng ring captures, streams folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blktrace_xen.cli import app
from blktrace_xen.encode.blkif import RingPage
from blktrace_xen.encode.ringcap import RingcapWriter
from blktrace_xen.streams.load import load_streams
from blktrace_xen.streams.store import write_streams

runner = CliRunner()


@pytest.fixture()
def capture(tmp_path: Path) -> Path:
    """Two snapshots of one ring: two writes published, then both answered (second first)."""
    path = tmp_path / "ring.pcapng"
    page = RingPage("x86_64-abi", 0)
    with RingcapWriter(path) as w:
        iface = w.add_ring(3, 51712, 0, abi="x86_64-abi", ring_page_order=0, backend_domid=0)
        page.put_request(0, operation=1, id=7, sector_number=64, segments=[(10, 0, 7)])
        page.put_request(1, operation=1, id=9, sector_number=128, segments=[(11, 0, 7)])
        page.req_prod = 2
        w.write_snapshot(iface, 1_000, page.to_bytes())
        page.put_response(0, id=9, operation=1, status=0)
        page.put_response(1, id=7, operation=1, status=0)
        page.rsp_prod = 2
        w.write_snapshot(iface, 2_000, page.to_bytes())
    return path


def test_info_ringcap_shows_rings_sessions_and_requests(capture: Path) -> None:
    result = runner.invoke(app, ["info", str(capture)])
    assert result.exit_code == 0, result.output
    assert "vbd/3/51712/q0: x86_64-abi order 0 (32 entries)" in result.output
    assert "1 ring, 1 session with I/O" in result.output
    assert "d3/51712/q0: 2 requests, 2 completed" in result.output


def test_info_json_ringcap_carries_the_streams_summary(capture: Path) -> None:
    result = runner.invoke(app, ["info", "--json", str(capture)])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.output)
    assert meta["format"] == "ringcap"
    assert meta["streams"]["rings"][0]["requests"] == 2


def test_dump_ringcap_prints_snapshots_requests_and_responses(capture: Path) -> None:
    result = runner.invoke(app, ["dump", str(capture)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum("snap #" in line for line in lines) == 2
    assert any("request idx=0 id=7 op=1 sector=64" in line for line in lines)
    assert any("response idx=0 id=9 op=1 status=0" in line for line in lines)


def test_dump_limit(capture: Path) -> None:
    result = runner.invoke(app, ["dump", "-n", "1", str(capture)])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 1


def test_info_streams_folder(capture: Path, tmp_path: Path) -> None:
    folder = tmp_path / "streams"
    write_streams(load_streams([capture]), folder)
    result = runner.invoke(app, ["info", str(folder)])
    assert result.exit_code == 0, result.output
    assert "streams folder" in result.output
    assert "d3/51712/q0: 2 requests, 2 completed" in result.output


def test_missing_file_is_one_error_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", str(tmp_path / "nope.bin")])
    assert result.exit_code == 1
    assert result.output.count("error:") == 1
    assert "nope.bin" in result.output

"""tshark and capinfos read every ring capture we write, and agree with our reader."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from blktrace_xen.decode.ringcap import read_ringcap
from blktrace_xen.encode.blkif import RingPage
from blktrace_xen.encode.ringcap import RingcapWriter
from tests.conftest import require_tool


@pytest.mark.parametrize(("abi", "order"), [("x86_64-abi", 0), ("x86_32-abi", 2)])
def test_tshark_reads_our_capture(tmp_path: Path, abi: str, order: int) -> None:
    tshark = require_tool("tshark")
    capinfos = require_tool("capinfos")
    p = tmp_path / "c.pcapng"
    r = RingPage(abi, order)
    base = 1_795_455_843_686_219_737
    with RingcapWriter(p) as w:
        i = w.add_ring(1, 51712, 0, abi=abi, ring_page_order=order)
        x = w.add_xenstore()
        for k in range(5):
            r.req_prod = 0xFFFFFFFE + k
            w.write_snapshot(i, base + 3_000_017 * k, r.to_bytes(), tsc=k)
        w.write_xenstore(base + 1, "/local/domain/1/device/vbd/51712/state", "5", iface=x)
    cap = read_ringcap(p)
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(p),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.len",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert len(out) == cap.snapshots.height + cap.xenstore.height == 6
    rows = [line.split("\t") for line in out]
    ring_rows = [r_ for r_ in rows if r_[1].startswith("vbd/")]
    ours = cap.snapshots["ns"].to_list()
    assert [int(t.replace(".", "")) for t, _, _ in ring_rows] == ours
    assert {r_[1] for r_ in ring_rows} == {"vbd/1/51712/q0"}
    assert {int(r_[2]) for r_ in ring_rows} == {4096 << order}
    assert [r_[1] for r_ in rows if not r_[1].startswith("vbd/")] == ["xenstore"]
    info = subprocess.run(
        [capinfos, "-c", "-T", "-r", str(p)], check=True, capture_output=True, text=True
    ).stdout
    assert info.strip().split("\t")[-1] == "6"

"""Dumps written by a C program built against Xen's own trace.h decode to its record list."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from blktrace_xen.decode.xentrace import read_xentrace
from blktrace_xen.structs import xentrace as xt
from tests.conftest import ROOT, require_tool

SOURCE = ROOT / "tests" / "oracles" / "xentrace_writer.c"


def build_oracle(tmp_path: Path) -> Path:
    gcc = require_tool("gcc")
    if not Path("/usr/include/xen/trace.h").is_file():
        require_tool("/usr/include/xen/trace.h")
    exe = tmp_path / "xentrace_writer"
    subprocess.run([gcc, "-O1", "-Wall", "-Werror", "-o", str(exe), str(SOURCE)], check=True)
    return exe


@pytest.mark.parametrize(("seed", "n", "guest"), [(1, 4000, True), (2, 4000, False), (3, 1, True)])
def test_decoder_reads_every_record_the_c_writer_stored(
    tmp_path: Path, seed: int, n: int, guest: bool
) -> None:
    exe = build_oracle(tmp_path)
    path = tmp_path / "c.bin"
    args = [str(exe), str(path), str(seed), str(n)] + (["guest"] if guest else [])
    listing = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    expected = [
        tuple(int(x, 0) for x in line.split())
        for line in listing.splitlines()
        if int(line.split()[4], 0) != xt.TRC_TRACE_WRAP_BUFFER
    ]
    events = read_xentrace(path, cpu_mhz=2400.0).events.sort("file_offset")
    got = [
        (r["file_offset"], r["cpu"], int(r["has_tsc"]), r["tsc"] if r["has_tsc"] else 0,
         r["event"], r["n_extra"], *(r[f"d{i}"] for i in range(r["n_extra"])))
        for r in events.iter_rows(named=True)
    ]  # fmt: skip
    assert got == expected
    assert len(got) > 0

"""The real Xen 4.17.7 traces are read completely, exactly as xenalyze reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from blktrace_xen.decode.xentrace import read_xentrace, summarize_xentrace
from tests.test_xenalyze import assert_same_as_xenalyze

CPU_MHZ = 2596.125  # xl-info.txt
# From realxen/README.md: records (incl. the cpu-change window headers) and TSC range.
EXPECTED = {
    "steady": (200820, 84910532302, 92659021183),
    "nopersist": (199944, 138707795939, 146465391373),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_counts_cpus_and_tsc_range(realxen: Path, scenario: str) -> None:
    path = realxen / scenario / "trace-all.bin"
    records, first, last = EXPECTED[scenario]
    info = summarize_xentrace(path, cpu_mhz=CPU_MHZ)
    assert info["records"] + info["windows"] + info["wrap_records"] == records
    assert (info["first_tsc"], info["last_tsc"]) == (first, last)
    assert info["cpus"] == [0, 1]
    assert info["warnings"] == []
    res = read_xentrace(path, cpu_mhz=CPU_MHZ)
    assert res.events.height == info["records"]
    assert res.meta["first_tsc"] == first
    assert sorted(res.events["file_offset"].to_list()) == res.events["file_offset"].sort().to_list()
    if scenario == "nopersist":
        assert res.events.filter(res.events["class"] == 0x010).height > 0  # grant map/unmap


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_order_cpu_and_ns_equal_xenalyze(realxen: Path, scenario: str) -> None:
    path = realxen / scenario / "trace-all.bin"
    assert assert_same_as_xenalyze(path, CPU_MHZ) > 190_000

"""The healthy real captures of ../shared/realxen: nothing above info, btt counts = streams'."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from blktrace_xen.analyses import btt_table, run_rules
from blktrace_xen.streams.load import load_streams
from tests.rxring import rxring_to_pcapng

CASES = [("steady", "ring-1-51712.bin"), ("nopersist", "ring-2-51712.bin")]


@pytest.mark.parametrize(("scenario", "ring"), CASES)
def test_healthy_capture_has_no_finding_above_info(
    realxen: Path, tmp_path: Path, scenario: str, ring: str
) -> None:
    cap = tmp_path / f"{scenario}.pcapng"
    rxring_to_pcapng(realxen / scenario / ring, cap)
    streams = load_streams([cap, realxen / scenario / "trace-all.bin"], cpu_mhz=2596.125)
    assert streams.requests.height > 600  # the workload did ~1500 ops; the poller saw these
    findings = run_rules(streams)
    above_info = findings.filter(pl.col("severity") != "info")
    assert above_info.is_empty(), above_info.select("rule", "message").to_dicts()
    table = btt_table(streams)
    assert table["count"].sum() == streams.io.height == streams.requests.height

"""The summary counts the sessions findings name, with the numbers they print."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from blktrace_xen.analyses import run_rules
from blktrace_xen.report import assemble as report_assemble
from blktrace_xen.streams.load import load_streams
from blktrace_xen.streams.summary import session_label, streams_summary
from blktrace_xen.synth.scenarios import synthesize


def test_session_label() -> None:
    assert session_label([]) == "no session"
    assert session_label([1]) == "session 1"
    assert session_label([2, 0, 1, 5, 5]) == "sessions 0-2, 5"
    assert session_label([0, 3, 4]) == "sessions 0, 3-4"


@pytest.mark.parametrize(
    ("scenario", "numbers"),
    [("disconnect-during-io", [1]), ("save-restore-during-io", [1, 2])],
)
def test_findings_summary_and_report_agree_on_sessions(
    scenario: str, numbers: list[int], tmp_path: Path
) -> None:
    # A synthetic trace logs each connect as domain create, map and Connected of
    # both ends; a suspend/resume adds one more life of the ring.
    synthesize(scenario, tmp_path, seed=0, duration_s=0.2, iops=2000)
    streams = load_streams([tmp_path / "trace.xentrace", tmp_path / "ring.pcapng"])
    summary = streams_summary(streams)
    (ring,) = summary["rings"]
    assert ring["sessions"] == numbers
    assert summary["ring_sessions"] == len(numbers)
    findings = run_rules(streams)
    named = set(findings["session"].drop_nulls().to_list())
    assert named and named <= set(numbers)
    assert any(f"session {numbers[-1]}:" in m for m in findings["message"].to_list())
    report = report_assemble(streams, findings)
    assert report.summary["sessions"] == len(numbers)
    assert set(pl.concat([streams.io["session"], streams.responses["session"]])) == set(numbers)

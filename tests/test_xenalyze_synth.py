"""Debian's xenalyze reads a synthesized dump without guest records, with no error."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from blktrace_xen.synth.scenarios import synthesize
from tests.conftest import require_tool


@pytest.mark.parametrize("scenario", ["steady", "destroy-during-swap", "migrate-during-io"])
def test_xenalyze_reads_guestless_dump(tmp_path: Path, scenario: str) -> None:
    xenalyze = require_tool("/usr/bin/xenalyze")
    synthesize(scenario, tmp_path, seed=1, duration_s=0.1, guest_events=False)
    trace = tmp_path / "trace.xentrace"
    for args in ([], ["--dump-all"]):
        proc = subprocess.run(
            [xenalyze, *args, str(trace)], capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        text = proc.stdout + proc.stderr
        assert not re.search(r"FATAL|[Ee]rror|early_eof", text), text[-2000:]
    # It saw the grant traffic: one map and one unmap per segment of each request.
    summary = subprocess.run(
        [xenalyze, str(trace)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert re.search(r"mem\s*:\s*[1-9]\d*", summary)

"""Regenerate docs/img/report.png: ``python docs/img/make_report_png.py``.

Builds the demo report from the report's sample streams, analysed by the real
rule catalogue and btt table, opens it in headless Chromium and saves the top
of the page.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from blktrace_xen.analyses import btt_table, run_rules
from blktrace_xen.report import assemble, write_html
from blktrace_xen.report.browser import render_check
from blktrace_xen.report.sample import sample_streams

HERE = Path(__file__).resolve().parent


def main() -> int:
    streams, _ = sample_streams(20_000, n_rings=3, seed=0)
    verdicts = [
        {
            "logic": "blkback-no-wait",
            "verdict": "fails",
            "violations": [
                {
                    "invariant": "response_after_unmap",
                    "t_ns": int(streams.io["rsp_ns"].max() or 0),
                    "domid": 1,
                    "vdev": 51712,
                    "queue": 0,
                    "id": 2,
                    "message": "demo: a response written after the ring was unmapped",
                }
            ],
            "caveats": ["demo verdicts: written by this script, not by replay"],
        },
        {"logic": "blkback-wait-io", "verdict": "passes", "violations": [], "caveats": []},
    ]
    data = assemble(
        streams,
        run_rules(streams),
        btt=btt_table(streams),
        verdicts=verdicts,
        title="blktrace-xen incident report (demo)",
    )
    with tempfile.TemporaryDirectory() as tmp:
        page = write_html(data, Path(tmp) / "demo.html")
        seen = render_check(page, screenshot_height=2200)
    if seen.console_errors or seen.screenshot is None:
        print(f"report did not render cleanly: {seen.console_errors}", file=sys.stderr)
        return 1
    (HERE / "report.png").write_bytes(seen.screenshot)
    print(f"wrote {HERE / 'report.png'} ({len(seen.figures)} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

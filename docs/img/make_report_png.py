"""Regenerate docs/img/report.png: ``python docs/img/make_report_png.py``.

Runs ``blktrace-xen demo`` (a synthesized seed-000 incident, analysed and
replayed for real), opens its HTML report in headless Chromium and saves the
top of the page, so the picture in the docs is what a user's first command
produces.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from blktrace_xen.cli.commands.demo import run_demo
from blktrace_xen.report.browser import render_check

HERE = Path(__file__).resolve().parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo(Path(tmp) / "demo")
        page = Path(result["files"]["report_html"])
        seen = render_check(page, screenshot_height=2200)
    if seen.console_errors or seen.screenshot is None:
        print(f"report did not render cleanly: {seen.console_errors}", file=sys.stderr)
        return 1
    (HERE / "report.png").write_bytes(seen.screenshot)
    print(f"wrote {HERE / 'report.png'} ({len(seen.figures)} figures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

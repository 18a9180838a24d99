"""The report in a real browser: Debian's Chromium, headless, over the DevTools protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from blktrace_xen.report import assemble, write_html
from blktrace_xen.report.browser import BrowserError, render_check
from blktrace_xen.report.sample import sample_streams
from tests.conftest import require_tool

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # about 5 s on a loaded 2-core machine: starts Chromium, parses plotly.js
def test_report_renders_offline_without_errors_and_every_figure_has_data(
    tmp_path: Path,
) -> None:
    chromium = require_tool("/usr/bin/chromium")
    streams, findings = sample_streams(8000, n_rings=2, seed=3)
    verdicts = [{"logic": "a", "verdict": "passes", "violations": [], "caveats": []}]
    page = write_html(assemble(streams, findings, verdicts=verdicts), tmp_path / "r.html")

    seen = render_check(page, chromium=chromium, screenshot_height=1200)

    assert seen.console_errors == []
    assert seen.title == "blktrace-xen incident report"
    # Offline: the browser fetched the report file and nothing else.
    assert seen.requests == [page.resolve().as_uri()]
    ids = [f["id"] for f in seen.figures]
    assert ids == [
        "fig-overview",
        "fig-ring-0",
        "fig-ring-1",
        "fig-latency-hist",
        "fig-latency-time",
    ]
    for fig in seen.figures:
        assert fig["traces"] > 0, fig
        assert all(n > 0 for n in fig["points"]), fig
        assert fig["svg"] > 0, fig  # plotly drew it
    assert seen.screenshot is not None and seen.screenshot.startswith(PNG_MAGIC)
    (tmp_path / "report.png").write_bytes(seen.screenshot)


def test_a_page_with_a_script_error_is_caught(tmp_path: Path) -> None:
    chromium = require_tool("/usr/bin/chromium")
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><head><title>t</title></head><body><script>"
        "console.error('boom'); undefinedFunction();</script></body></html>"
    )
    seen = render_check(page, chromium=chromium)
    assert any("boom" in e for e in seen.console_errors)
    assert any("undefinedFunction" in e for e in seen.console_errors)
    assert seen.figures == []


def test_missing_browser_or_page_is_a_project_error(tmp_path: Path) -> None:
    with pytest.raises(BrowserError, match="no such report"):
        render_check(tmp_path / "absent.html")
    page = tmp_path / "p.html"
    page.write_text("<html></html>")
    with pytest.raises(BrowserError, match="cannot start"):
        render_check(page, chromium=str(tmp_path / "no-chromium"))

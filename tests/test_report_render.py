"""Figures, HTML and Markdown of the report: deterministic, offline, escaped, plain."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from blktrace_xen import schema
from blktrace_xen.report import assemble, figures, render_html, render_markdown, write_report
from blktrace_xen.report.data import ReportData
from blktrace_xen.report.sample import sample_streams

VERDICTS = [
    {
        "logic": "xbdback-2005",
        "verdict": "fails",
        "violations": [
            {
                "invariant": "rsp_after_unmap",
                "t_ns": 5_000_000,
                "domid": 1,
                "vdev": 51712,
                "queue": 0,
                "id": 3,
                "message": "response written after unmap",
            }
        ],
        "caveats": ["117 trace records lost in the window"],
    },
    {"logic": "refcounted", "verdict": "passes", "violations": [], "caveats": []},
]


@pytest.fixture(scope="module")
def data() -> ReportData:
    streams, findings = sample_streams(6000, n_rings=3, seed=1)
    evil = schema.conform(
        pl.DataFrame(
            {
                "rule": ["x.<b>"],
                "severity": ["critical"],
                "domid": [1],
                "vdev": [51712],
                "queue": [0],
                "ns": [2_000_000],
                "message": ["</script><script>alert(1)</script>"],
                "evidence": [json.dumps({"rows": [{"a": "<i>", "b": 2}], "k": [1, 2]})],
                "confidence": [0.5],
            }
        ),
        "findings",
    )
    return assemble(streams, pl.concat([findings, evil]), verdicts=VERDICTS)


def test_every_figure_has_data(data: ReportData) -> None:
    figs = [
        figures.overview_figure(data.timeline, data.ring_table["ring"].to_list()),
        figures.latency_histogram_figure(data.latency_hist),
        figures.latency_time_figure(data.latency_time),
        *(figures.ring_figure(r) for r in data.rings),
    ]
    for fig in figs:
        assert fig.data, fig.layout.title.text
        assert all(len(t.x) > 0 for t in fig.data), fig.layout.title.text
        assert all(t.type == "scatter" for t in fig.data)  # SVG: renders without a GPU


def test_finding_markers_carry_their_anchor(data: ReportData) -> None:
    fig = figures.overview_figure(data.timeline, [])
    anchors = {a for t in fig.data for a in t.customdata}
    shown = {f.anchor for f in data.findings}
    assert anchors <= shown | {f"rule-{r}" for r in data.rule_table["rule"]}
    assert anchors & shown


def test_html_is_deterministic_and_self_contained(data: ReportData) -> None:
    page = render_html(data)
    assert page == render_html(data)
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert page.count('<script type="text/javascript">') == 1  # plotly.js, once
    ids = re.findall(r'<div id="(fig-[^"]+)" class="plotly-graph-div"', page)
    assert ids == [
        "fig-overview",
        "fig-ring-0",
        "fig-ring-1",
        "fig-ring-2",
        "fig-latency-hist",
        "fig-latency-time",
    ]


def test_html_escapes_what_the_trace_says(data: ReportData) -> None:
    page = render_html(data)
    assert "<script>alert(1)" not in page and "</script><script>" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert "<i>" not in page and "&lt;i&gt;" in page


def test_html_embeds_the_summary_it_shows(data: ReportData) -> None:
    page = render_html(data)
    blob = re.search(r'<script type="application/json" id="bx-summary">(.*?)</script>', page)
    assert blob is not None
    embedded = json.loads(blob.group(1).replace("<\\/", "</"))
    assert embedded["summary"] == json.loads(json.dumps(data.summary))
    assert embedded["verdict"] == data.verdict
    s = data.summary
    assert f"<th>requests</th><td class=num>{s['requests']}</td>" in page
    for f in data.findings:
        assert f'id="{f.anchor}"' in page
    assert "bxShow('fig-ring-" in page  # evidence links back to its timeline


def test_replay_verdicts_side_by_side(data: ReportData) -> None:
    page = render_html(data)
    grid = page[page.index('<section id="replay">') :]
    assert grid.index("refcounted") < grid.index("xbdback-2005")
    assert '<span class="fails">fails</span>' in grid and "response written after unmap" in grid


def test_markdown_is_plain_text_for_a_mailing_list(data: ReportData) -> None:
    md = render_markdown(data)
    assert not re.search(r"(?<!\\)<", md)  # the trace's "<script>" arrives escaped: "\\<script>"
    assert "\\</script>\\<script>alert(1)" in md
    lines = md.splitlines()
    assert max(len(ln) for ln in lines if not ln.startswith("|")) <= 72
    # Every table is aligned: all its lines have the same width.
    table: list[str] = []
    for ln in [*lines, ""]:
        if ln.startswith("|"):
            table.append(ln)
        elif table:
            assert len({len(t) for t in table}) == 1, table
            table = []
    s = data.summary
    assert re.search(rf"\| requests +\| +{s['requests']} \|", md)
    assert re.search(rf"\| never answered +\| +{s['unanswered']} \|", md)
    assert "| xbdback-2005 | fails" in md


def test_write_report_writes_both(tmp_path: Path, data: ReportData) -> None:
    html_path, md_path = write_report(data, tmp_path / "r.html", tmp_path / "r.md")
    assert html_path.read_text(encoding="utf-8") == render_html(data)
    assert md_path.read_text(encoding="utf-8") == render_markdown(data)

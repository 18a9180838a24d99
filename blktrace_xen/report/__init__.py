"""Plotly figures and the self-contained HTML / Markdown incident report.

Typical use::

    data = assemble(streams, findings, btt=btt, verdicts=verdicts)
    write_report(data, "incident.html", "incident.md")
"""

from blktrace_xen.report.data import ReportData, ReportOptions, assemble
from blktrace_xen.report.html import render_html, write_html, write_report
from blktrace_xen.report.markdown import render_markdown

__all__ = [
    "ReportData",
    "ReportOptions",
    "assemble",
    "render_html",
    "render_markdown",
    "write_html",
    "write_report",
]

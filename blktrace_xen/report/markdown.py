"""The report as a plain-text Markdown summary that fits a mailing-list post.

Mailing lists (xen-devel included) read mail as plain text: no HTML, lines
kept short, tables as aligned pipe tables that read the same rendered or not.
Numbers come from the same :class:`ReportData` as the HTML report, so the two
never disagree. Rendering only; :mod:`blktrace_xen.report.html` writes files.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import polars as pl

from blktrace_xen import schema
from blktrace_xen.report.data import ReportData, op_name, ring_label

WIDTH = 72
MAX_CELL = 40  # longest cell before it is shortened with an ellipsis


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
    else:
        text = _plain(str(value)).replace("|", "/").replace("\n", " ")
    if len(text) > MAX_CELL:
        text = text[: MAX_CELL - 1] + "…"
    return text


def text_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: dict[str, int] | None = None
) -> list[str]:
    """An aligned pipe table: numbers right-aligned, everything else left."""
    digits = digits or {}
    cells = [
        [_cell(v, digits.get(h, 3)) for h, v in zip(headers, row, strict=True)] for row in rows
    ]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if num else "-" * (w + 2)
            for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return [line(list(headers)), rule, *(line(r) for r in cells)]


def _plain(text: str) -> str:
    """Text from the trace, made inert: a backslash keeps ``<`` from starting HTML."""
    return text.replace("<", "\\<")


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(
        _plain(text), width=WIDTH, initial_indent=indent, subsequent_indent=" " * len(indent)
    ) or [""]


# The btt columns a mail has room for; the HTML report shows them all.
BTT_COLUMNS: dict[str, str] = {
    "count": "n",
    "completed": "done",
    "errors": "err",
    "iops": "iops",
    "lat_p50_ns": "p50 ns",
    "lat_p99_ns": "p99 ns",
    "lat_max_ns": "max ns",
    "qd_max": "qd max",
}


def _btt(btt: pl.DataFrame) -> list[str]:
    """The btt table narrowed for a mail: one ring label, the op name, the key columns."""
    frame = btt
    lead: list[str] = []
    if all(k in frame.columns for k in schema.RING_KEY):
        labels = [ring_label(*k) for k in frame.select(schema.RING_KEY).iter_rows()]
        frame = frame.with_columns(pl.Series("ring", labels, dtype=pl.String))
        lead.append("ring")
    if "operation" in frame.columns:
        names = [op_name(o) for o in frame["operation"].to_list()]
        frame = frame.with_columns(pl.Series("op", names, dtype=pl.String))
        lead.append("op")
    keep = [c for c in BTT_COLUMNS if c in frame.columns]
    if not lead and not keep:
        keep = frame.columns
    narrowed = frame.select(*lead, *keep)
    headers = [BTT_COLUMNS.get(c, c) for c in narrowed.columns]
    digits = {BTT_COLUMNS.get(c, c): 0 for c in narrowed.columns if c.endswith("_ns")}
    lines = text_table(headers, narrowed.rows(), {"iops": 1, **digits})
    if len(narrowed.columns) < len(btt.columns):
        lines += ["", "(more columns in the HTML report)"]
    return lines


def render_markdown(data: ReportData, *, max_findings: int = 10) -> str:
    """The summary as Markdown text (no HTML anywhere)."""
    s = data.summary
    p = data.provenance
    out: list[str] = [f"# {_plain(data.title)}", "", *_wrap(data.verdict), ""]
    if data.generated:
        out += [f"Generated {data.generated}.", ""]

    out += ["## Summary", ""]
    out += text_table(
        ["what", "count"],
        [
            ["rings", s["rings"]],
            ["ring sessions", s["sessions"]],
            ["time span (s)", s["span_s"]],
            ["requests", s["requests"]],
            ["completed", s["completed"]],
            ["never answered", s["unanswered"]],
            ["error responses", s["errors"]],
            ["control events", s["control_events"]],
            ["lost trace records", s["lost_records"]],
            ["unseen ring entries", s["unseen_entries"]],
            ["findings", s["findings_total"]],
        ],
        digits={"count": 6},
    )
    out.append("")
    sevs = list(reversed(schema.SEVERITIES))
    out += text_table(sevs, [[s["findings_by_severity"][v] for v in sevs]])
    out.append("")

    if data.rule_table.height:
        out += ["## Findings by rule", ""]
        rows = data.rule_table.select("rule", "severity", "count", "rings", "first_s").rows()
        out += text_table(
            ["rule", "severity", "count", "rings", "first (s)"], rows, {"first (s)": 6}
        )
        out.append("")
        worst_first = sorted(
            data.findings,
            key=lambda f: (-schema.SEVERITIES.index(f.severity), f.t_s, f.anchor),
        )[:max_findings]
        out += [f"## Most severe findings ({len(worst_first)} of {s['findings_total']})", ""]
        for f in sorted(worst_first, key=lambda f: (f.t_s, f.anchor)):
            out += _wrap(f"[{f.severity}] {f.rule} on {f.ring} at {f.t_s:.6f} s: {f.message}", "- ")
        out.append("")

    out += ["## Rings", ""]
    cols = ["ring", "requests", "completed", "unanswered", "errors", "max_inflight", "findings"]
    out += text_table(
        ["ring", "requests", "done", "open", "errors", "max in flight", "findings"],
        data.ring_table.select(cols).rows(),
    )
    out.append("")

    if data.op_table.height:
        out += ["## Latency per operation (µs)", ""]
        out += text_table(
            ["op", "requests", "completed", "errors", "p50", "p99", "max"],
            data.op_table.rows(),
            {"p50": 1, "p99": 1, "max": 1},
        )
        out.append("")

    if data.btt is not None and data.btt.height:
        out += ["## btt table", ""]
        out += _btt(data.btt)
        out.append("")

    if data.verdicts:
        out += ["## Replay verdicts", ""]
        rows_v = []
        for v in data.verdicts:
            first = v.violations.row(0, named=True) if v.violations.height else None
            rows_v.append(
                [
                    v.logic,
                    v.verdict,
                    v.n_violations,
                    "-" if first is None else f"{first['invariant']} @ {first['t_s']:.6f} s",
                ]
            )
        out += text_table(["logic", "verdict", "violations", "first violation"], rows_v)
        out.append("")
        for v in data.verdicts:
            for c in v.caveats:
                out += _wrap(f"{v.logic}: {c}", "- ")
        out.append("")

    out += ["## Provenance", ""]
    if p["inputs"]:
        out += ["Inputs (kind, path, sha256):", ""]
    for i in p["inputs"]:
        out += [*_wrap(f"{i['kind']} {i['path']}", "- "), f"  {i['sha256']}"]
    mhz = p["cpu_mhz"]
    mhz_text = "unknown" if mhz is None else f"{mhz}"
    if p["cpu_mhz_default"]:
        mhz_text += " (default: pass --cpu-mhz from `xl info`)"
    out += [
        f"- cpu_mhz {mhz_text}",
        f"- lost trace records {p['lost_records']} in {p['lost_windows']} windows",
        f"- blktrace-xen {p['tool_version']}",
        "",
    ]
    return "\n".join(out)

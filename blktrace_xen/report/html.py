"""The one writer of the HTML report: a single self-contained, deterministic file.

Self-contained: plotly.js is inlined once in ``<head>`` (about 4.8 MB) and no
other resource is referenced, so the report opens offline, from a ticket
attachment or a mail. Deterministic: figure divs get fixed ids, inputs are
already sorted by :mod:`data`, and no time is stamped unless the caller gives
one, so the same input gives byte-identical HTML (tests rely on it).

The summary numbers are also embedded as JSON (``<script id="bx-summary">``)
so machines (and the tests comparing with ``analyze --json``) read exactly
what people see.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
from plotly.offline import get_plotlyjs

from blktrace_xen import schema
from blktrace_xen.report import figures
from blktrace_xen.report.data import FindingView, ReportData, VerdictView
from blktrace_xen.report.markdown import render_markdown

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 1em 3em;
color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;margin-top:2em}
.verdict{font-size:1.15em;background:#f6f6f6;border-left:4px solid #e45756;padding:.6em 1em}
nav a{margin-right:1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.sev{padding:0 .4em;border-radius:3px;color:#fff;font-size:.85em}
.finding{border:1px solid #ddd;border-radius:4px;padding:.4em .8em;margin:.8em 0}
.finding:target{outline:3px solid #f2a900}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1em}
.grid>div{border:1px solid #ddd;border-radius:4px;padding:.4em .8em}
.fails{color:#e45756;font-weight:bold}.passes{color:#54a24b;font-weight:bold}
code{font-size:.95em}.note{color:#666;font-size:.9em}
"""

# Wires the report together once every figure is drawn: a click on a finding
# marker jumps to its evidence; "show on timeline" zooms the ring's figure to
# the finding's window and scrolls to it.
_JS = """
function bxShow(id, t0, t1) {
  var gd = document.getElementById(id);
  if (!gd || !window.Plotly) { return false; }
  var pad = Math.max((t1 - t0) * 0.5, 1e-4);
  var upd = {};
  Object.keys(gd.layout).forEach(function (k) {
    if (/^xaxis[0-9]*$/.test(k)) { upd[k + '.range'] = [t0 - pad, t1 + pad]; }
  });
  Plotly.relayout(gd, upd);
  gd.scrollIntoView({block: 'center'});
  return false;
}
window.addEventListener('load', function () {
  document.querySelectorAll('.plotly-graph-div').forEach(function (gd) {
    if (!gd.on) { return; }
    gd.on('plotly_click', function (ev) {
      var p = ev.points && ev.points[0];
      if (p && typeof p.customdata === 'string') { location.hash = p.customdata; }
    });
  });
});
"""

_PLOT_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def _table(
    df: pl.DataFrame,
    *,
    digits: dict[str, int] | None = None,
    row_id: Callable[[dict[str, Any]], str | None] | None = None,
    cell: Callable[[str, Any], str | None] | None = None,
) -> str:
    """An HTML table of ``df``: numbers right-aligned, values escaped."""
    digits = digits or {}
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    rows = []
    for row in df.iter_rows(named=True):
        rid = row_id(row) if row_id else None
        attr = f' id="{_e(rid)}"' if rid else ""
        cells = []
        for col, value in row.items():
            klass = ' class="num"' if isinstance(value, int | float) else ""
            text = cell(col, value) if cell else None
            if text is None:
                text = _e(_fmt(value, digits.get(col, 3)))
            cells.append(f"<td{klass}>{text}</td>")
        rows.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _kv_table(pairs: Sequence[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th>{_e(k)}</th><td{' class=num' if isinstance(v, int | float) else ''}>"
        f"{_e(_fmt(v))}</td></tr>"
        for k, v in pairs
    )
    return f"<table><tbody>{body}</tbody></table>"


def _sev(sev: str) -> str:
    color = figures.SEVERITY_COLORS.get(sev, "#666")
    return f'<span class="sev" style="background:{color}">{_e(sev)}</span>'


def _figure(fig: go.Figure, div_id: str) -> str:
    return str(
        pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config=_PLOT_CONFIG,
            validate=False,
        )
    )


def _evidence(value: Any) -> str:
    """Evidence JSON as tables: scalars as key/value rows, lists of objects as sub-tables."""
    if isinstance(value, dict):
        rows = []
        for k, v in value.items():
            rows.append(f"<tr><th>{_e(k)}</th><td>{_evidence(v)}</td></tr>")
        return f"<table><tbody>{''.join(rows)}</tbody></table>" if rows else "–"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        cols: list[str] = []
        for v in value:
            cols += [k for k in v if k not in cols]
        head = "".join(f"<th>{_e(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{_evidence(v.get(c))}</td>" for c in cols) + "</tr>"
            for v in value
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(value, list):
        return _e(", ".join(_fmt(v) for v in value))
    return _e(_fmt(value))


def _finding(f: FindingView) -> str:
    t_end = f.t_end_s if f.t_end_s is not None else f.t_s
    where = []
    if f.id is not None:
        where.append(f"id {f.id}")
    if f.idx is not None:
        where.append(f"idx {f.idx}")
    if f.confidence is not None and f.confidence < 1.0:
        where.append(f"confidence {f.confidence:.2f}")
    link = ""
    if f.ring_anchor is not None:
        link = (
            f' · <a href="#{_e(f.ring_anchor)}" '
            f"onclick=\"return bxShow('fig-{_e(f.ring_anchor)}', {f.t_s!r}, {t_end!r})\">"
            "show on timeline</a>"
        )
    window = f"{f.t_s:.6f} s" + (f" – {t_end:.6f} s" if t_end != f.t_s else "")
    return (
        f'<div class="finding" id="{_e(f.anchor)}">'
        f"<h4>{_sev(f.severity)} <code>{_e(f.rule)}</code> on {_e(f.ring)} at {window}"
        f"{link}</h4>"
        f"<p>{_e(f.message)}{' (' + _e(', '.join(where)) + ')' if where else ''}</p>"
        f"{_evidence(f.evidence)}</div>"
    )


def _verdict(v: VerdictView) -> str:
    klass = "fails" if v.verdict == "fails" else "passes" if v.verdict == "passes" else ""
    parts = [
        f'<h3><code>{_e(v.logic)}</code>: <span class="{klass}">{_e(v.verdict)}</span></h3>',
        f"<p>{v.n_violations} violation{'s' if v.n_violations != 1 else ''}</p>",
    ]
    if v.by_invariant:
        parts.append(
            _table(
                pl.DataFrame(
                    {"invariant": list(v.by_invariant), "count": list(v.by_invariant.values())}
                )
            )
        )
    if v.violations.height:
        parts.append(_table(v.violations, digits={"t_s": 6}))
        if v.n_violations > v.violations.height:
            parts.append(
                f'<p class="note">first {v.violations.height} of {v.n_violations} listed</p>'
            )
    if v.caveats:
        parts.append("<ul>" + "".join(f"<li>{_e(c)}</li>" for c in v.caveats) + "</ul>")
    return "<div>" + "".join(parts) + "</div>"


def render_html(data: ReportData) -> str:
    """The whole report as one HTML string."""
    s = data.summary
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(data.title)}</title>",
        f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        f"<script>{_JS}</script>",
        "</head><body>",
        f"<h1>{_e(data.title)}</h1>",
        f'<p class="verdict" id="verdict">{_e(data.verdict)}</p>',
    ]
    if data.generated:
        out.append(f'<p class="note">generated {_e(data.generated)}</p>')
    sections = [("summary", "Summary"), ("rings", "Rings"), ("latency", "Latency")]
    sections += [("btt", "btt table"), ("findings", "Findings")]
    if data.verdicts:
        sections.append(("replay", "Replay"))
    sections.append(("provenance", "Provenance"))
    out.append("<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in sections) + "</nav>")

    out.append('<section id="summary"><h2>Summary</h2>')
    out.append(
        _kv_table(
            [
                ("rings", s["rings"]),
                ("ring sessions", s["sessions"]),
                ("time span (s)", s["span_s"]),
                ("requests", s["requests"]),
                ("completed", s["completed"]),
                ("never answered", s["unanswered"]),
                ("error responses", s["errors"]),
                ("responses seen", s["responses"]),
                ("control events", s["control_events"]),
                ("ring snapshots", s["snapshots"]),
                ("lost trace records", s["lost_records"]),
                ("unseen ring entries", s["unseen_entries"]),
                ("findings", s["findings_total"]),
            ]
        )
    )
    by_sev = s["findings_by_severity"]
    out.append("<h3>Findings by severity</h3>")
    out.append(
        "<table><thead><tr>"
        + "".join(f"<th>{_sev(sev)}</th>" for sev in reversed(schema.SEVERITIES))
        + "</tr></thead><tbody><tr>"
        + "".join(f'<td class="num">{by_sev[sev]}</td>' for sev in reversed(schema.SEVERITIES))
        + "</tr></tbody></table>"
    )
    if data.rule_table.height:
        out.append("<h3>Findings by rule</h3>")
        out.append(
            _table(
                data.rule_table,
                digits={"first_s": 6},
                row_id=lambda r: f"rule-{r['rule']}",
                cell=lambda c, v: _sev(v) if c == "severity" else None,
            )
        )
        ring_order = data.ring_table["ring"].to_list()
        out.append(_figure(figures.overview_figure(data.timeline, ring_order), "fig-overview"))
    out.append("</section>")

    out.append('<section id="rings"><h2>Rings</h2>')
    ring_links = {r.label: r.anchor for r in data.rings}
    out.append(
        _table(
            data.ring_table,
            digits={"first_s": 6, "last_s": 6},
            cell=lambda c, v: (
                f'<a href="#{ring_links[v]}">{_e(v)}</a>'
                if c == "ring" and v in ring_links
                else (_sev(v) if c == "worst" and v else None)
            ),
        )
    )
    hidden = data.ring_table.height - len(data.rings)
    if hidden > 0:
        out.append(
            f'<p class="note">{hidden} quieter ring{"s" if hidden != 1 else ""} '
            "without a timeline figure (counts above are complete).</p>"
        )
    for ring in data.rings:
        out.append(f'<h3 id="{_e(ring.anchor)}">{_e(ring.label)}</h3>')
        out.append(_figure(figures.ring_figure(ring), f"fig-{ring.anchor}"))
    out.append("</section>")

    out.append('<section id="latency"><h2>Latency</h2>')
    out.append(_table(data.op_table, digits={"p50_us": 1, "p99_us": 1, "max_us": 1}))
    if data.latency_hist.height:
        out.append(_figure(figures.latency_histogram_figure(data.latency_hist), "fig-latency-hist"))
        out.append(_figure(figures.latency_time_figure(data.latency_time), "fig-latency-time"))
    else:
        out.append("<p>No completed request: no latency to show.</p>")
    out.append("</section>")

    out.append('<section id="btt"><h2>btt table</h2>')
    if data.btt is not None and data.btt.height:
        out.append('<div style="overflow-x:auto">' + _table(data.btt) + "</div>")
    else:
        out.append("<p>No btt table was computed.</p>")
    out.append("</section>")

    out.append('<section id="findings"><h2>Findings</h2>')
    if not data.findings:
        out.append("<p>No findings.</p>")
    for f in data.findings:
        out.append(_finding(f))
    if s["findings_total"] > len(data.findings):
        out.append(
            f'<p class="note">Evidence shown for {len(data.findings)} of '
            f"{s['findings_total']} findings (the most severe, at most "
            f"{data.options.max_findings_per_rule} per rule); the tables above count all.</p>"
        )
    out.append("</section>")

    if data.verdicts:
        out.append('<section id="replay"><h2>Replay verdicts</h2><div class="grid">')
        out += [_verdict(v) for v in data.verdicts]
        out.append("</div></section>")

    p = data.provenance
    out.append('<section id="provenance"><h2>Provenance</h2>')
    if p["inputs"]:
        out.append(_table(pl.DataFrame(p["inputs"])))
    mhz = p["cpu_mhz"]
    out.append(
        _kv_table(
            [
                ("blktrace-xen", p["tool_version"]),
                (
                    "cpu_mhz",
                    "–" if mhz is None else f"{mhz}{' (default)' if p['cpu_mhz_default'] else ''}",
                ),
                ("time 0 (ns on the input's clock)", p["t0_ns"]),
                ("time 0 (tsc)", p["t0_tsc"]),
                ("lost trace records", p["lost_records"]),
                ("lost-record windows", p["lost_windows"]),
                ("unseen ring entries", p["unseen_entries"]),
            ]
        )
    )
    if p["lost_by_cpu"]:
        out.append(
            _table(
                pl.DataFrame(
                    {"cpu": list(p["lost_by_cpu"]), "lost": list(p["lost_by_cpu"].values())}
                )
            )
        )
    out.append("</section>")

    blob = json.dumps(
        {
            "summary": s,
            "provenance": p,
            "verdict": data.verdict,
            "btt": [] if data.btt is None else data.btt.to_dicts(),
        },
        sort_keys=True,
        default=str,
    ).replace("<", "\\u003c")  # nothing inside the script element can look like a tag
    out.append(f'<script type="application/json" id="bx-summary">{blob}</script>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_html(data: ReportData, path: str | Path) -> Path:
    """Write the HTML report to ``path`` (UTF-8) and return the path."""
    target = Path(path)
    target.write_text(render_html(data), encoding="utf-8")
    return target


def write_report(
    data: ReportData, html_path: str | Path, md_path: str | Path | None = None
) -> list[Path]:
    """Write the HTML report and, when ``md_path`` is given, the Markdown summary."""
    written = [write_html(data, html_path)]
    if md_path is not None:
        target = Path(md_path)
        target.write_text(render_markdown(data), encoding="utf-8")
        written.append(target)
    return written

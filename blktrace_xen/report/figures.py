"""Plotly figures of the report: pure functions from prepared frames to ``go.Figure``.

Inputs are already reduced by :mod:`blktrace_xen.report.data` (at most a few
thousand points per trace), so nothing here scales with the trace. Every
trace is SVG ``go.Scatter``: WebGL traces fail in a browser without a GPU
(headless CI, remote desktops), and at these sizes SVG is fast enough. Arrays
are passed as numpy so plotly stores them as compact base64 (``bdata``).
Markers that stand for a finding carry its anchor in ``customdata`` so that a
click on the timeline jumps to the evidence.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from blktrace_xen import schema
from blktrace_xen.report.data import RingView

SEVERITY_COLORS: dict[str, str] = {
    "info": "#8c8c8c",
    "low": "#4c78a8",
    "medium": "#f2a900",
    "high": "#e45756",
    "critical": "#8b0000",
}
OP_COLORS: dict[str, str] = {
    "read": "#4c78a8",
    "write": "#e45756",
    "write_barrier": "#b279a2",
    "flush_diskcache": "#54a24b",
    "reserved_1": "#9d755d",
    "discard": "#eeca3b",
    "indirect": "#72b7b2",
}

# A small fixed template instead of plotly's default: the default is
# re-embedded in every figure (about 8 KB each) and may change between plotly
# releases, which would break byte-identical reports.
TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": "system-ui, sans-serif", "size": 12, "color": "#222"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": list(OP_COLORS.values()),
        "hovermode": "closest",
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "xaxis": {"gridcolor": "#eee", "zeroline": False, "showline": True, "linecolor": "#999"},
        "yaxis": {
            "gridcolor": "#eee",
            "zeroline": False,
            "showline": True,
            "linecolor": "#999",
            "automargin": True,
        },
        "legend": {"orientation": "h", "y": -0.18},
    }
)


def _finding_traces(markers: pl.DataFrame, y: str) -> list[go.Scatter]:
    """One marker trace per severity, worst last so it draws on top."""
    traces = []
    for sev in schema.SEVERITIES:
        part = markers.filter(pl.col("severity") == sev)
        if part.height == 0:
            continue
        counts = part["n"].to_list()
        texts = [
            t if n == 1 else f"{t} (+{n - 1} more in this interval)"
            for t, n in zip(part["text"].to_list(), counts, strict=True)
        ]
        traces.append(
            go.Scatter(
                x=part["t_s"].to_numpy(),
                y=part[y].to_list(),
                mode="markers",
                name=f"finding: {sev}",
                marker={
                    "color": SEVERITY_COLORS[sev],
                    "size": 11,
                    "symbol": "diamond",
                    "line": {"width": 1, "color": "#222"},
                },
                text=texts,
                customdata=part["anchor"].to_list(),
                hovertemplate="%{x:.6f} s<br>%{text}<extra></extra>",
            )
        )
    return traces


def overview_figure(timeline: pl.DataFrame, ring_order: list[str]) -> go.Figure:
    """Findings of every ring on one time axis (y = ring), coloured by severity."""
    fig = go.Figure(_finding_traces(timeline, "ring"))
    present = set(timeline["ring"].to_list())
    order = [r for r in ring_order if r in present]
    order += sorted(present - set(order))
    fig.update_layout(
        template=TEMPLATE,
        title={"text": "Findings over time, all rings"},
        height=max(260, 80 + 28 * len(order)),
        xaxis={"title": {"text": "time since trace start (s)"}},
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": order},
    )
    return fig


def ring_figure(ring: RingView) -> go.Figure:
    """A ring's timeline: control events and findings above occupancy and in-flight."""
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.35, 0.65], vertical_spacing=0.05
    )
    if ring.control.height:
        kinds = ring.control["kind"].to_list()
        texts = [
            t if n == 1 else f"{t} (+{n - 1} more {k} in this interval)"
            for t, n, k in zip(
                ring.control["text"].to_list(), ring.control["n"].to_list(), kinds, strict=True
            )
        ]
        fig.add_trace(
            go.Scatter(
                x=ring.control["t_s"].to_numpy(),
                y=kinds,
                mode="markers",
                name="control event",
                marker={"color": "#333", "size": 9, "symbol": "line-ns-open", "line": {"width": 2}},
                text=texts,
                hovertemplate="%{x:.6f} s<br>%{text}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    for trace in _finding_traces(ring.findings, "rule"):
        fig.add_trace(trace, row=1, col=1)
    if ring.inflight.height:
        exact = bool(ring.inflight["exact"].all())
        fig.add_trace(
            go.Scatter(
                x=ring.inflight["t_s"].to_numpy(),
                y=ring.inflight["inflight"].to_numpy(),
                mode="lines",
                line={"shape": "hv" if exact else "linear", "width": 1, "color": "#4c78a8"},
                name="in flight (requests)" + ("" if exact else " · min/max per interval"),
                hovertemplate="%{x:.6f} s: %{y} in flight<extra></extra>",
            ),
            row=2,
            col=1,
        )
    if ring.occupancy.height:
        exact = bool(ring.occupancy["exact"].all())
        fig.add_trace(
            go.Scatter(
                x=ring.occupancy["t_s"].to_numpy(),
                y=ring.occupancy["occupancy"].to_numpy(),
                mode="lines+markers" if ring.occupancy.height <= 500 else "lines",
                line={"shape": "hv" if exact else "linear", "width": 1, "color": "#e45756"},
                marker={"size": 4},
                name="ring occupancy (req_prod − rsp_prod)"
                + ("" if exact else " · min/max per interval"),
                hovertemplate="%{x:.6f} s: occupancy %{y}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    if ring.nr_ents is not None:
        fig.add_hline(
            y=ring.nr_ents,
            line={"dash": "dot", "color": "#999", "width": 1},
            annotation_text=f"ring size {ring.nr_ents}",
            annotation_position="top left",
            row=2,
            col=1,
        )
    fig.update_layout(
        template=TEMPLATE,
        title={"text": f"Ring {ring.label}"},
        height=460,
    )
    fig.update_yaxes(type="category", row=1, col=1)
    fig.update_yaxes(title={"text": "entries"}, rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title={"text": "time since trace start (s)"}, row=2, col=1)
    return fig


def latency_histogram_figure(hist: pl.DataFrame) -> go.Figure:
    """Latency distribution per op: exact counts in log-spaced bins, drawn as steps."""
    fig = go.Figure()
    for op in _ops_in_order(hist["op"].to_list()):
        part = hist.filter(pl.col("op") == op)
        xs = [*part["lo_us"].to_list(), part["hi_us"][-1]]
        ys = [*part["count"].to_list(), part["count"][-1]]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"shape": "hv", "color": OP_COLORS.get(op)},
                name=op,
                hovertemplate=f"{op}: %{{y}} requests from %{{x:.1f}} µs<extra></extra>",
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        title={"text": "Latency distribution per operation (exact counts, log bins)"},
        height=380,
        xaxis={"type": "log", "title": {"text": "latency (µs)"}},
        yaxis={"title": {"text": "requests"}},
    )
    return fig


def latency_time_figure(lat: pl.DataFrame) -> go.Figure:
    """Latency over time per op: every request when few, else p50 / p99 / max per interval."""
    fig = go.Figure()
    for op in _ops_in_order(lat["op"].to_list()):
        part = lat.filter(pl.col("op") == op)
        color = OP_COLORS.get(op)
        x = part["t_s"].to_numpy()
        if bool(part["exact"].all()):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=part["max_us"].to_numpy(),
                    mode="markers",
                    marker={"size": 3, "color": color},
                    name=op,
                    hovertemplate=f"{op} at %{{x:.6f}} s: %{{y:.1f}} µs<extra></extra>",
                )
            )
            continue
        styles: list[tuple[str, dict[str, Any]]] = [
            ("p50_us", {"width": 1.5}),
            ("p99_us", {"width": 1, "dash": "dash"}),
            ("max_us", {"width": 0.5, "dash": "dot"}),
        ]
        for col, line in styles:
            stat = col.removesuffix("_us")
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=part[col].to_numpy(),
                    mode="lines",
                    line={**line, "color": color},
                    name=f"{op} {stat}",
                    legendgroup=op,
                    hovertemplate=f"{op} {stat} at %{{x:.6f}} s: %{{y:.1f}} µs<extra></extra>",
                )
            )
    fig.update_layout(
        template=TEMPLATE,
        title={"text": "Latency over time per operation (by request time)"},
        height=380,
        xaxis={"title": {"text": "time since trace start (s)"}},
        yaxis={"type": "log", "title": {"text": "latency (µs)"}},
    )
    return fig


def _ops_in_order(ops: list[str]) -> list[str]:
    known = list(OP_COLORS)
    seen = sorted(set(ops), key=lambda o: (known.index(o) if o in known else len(known), o))
    return seen

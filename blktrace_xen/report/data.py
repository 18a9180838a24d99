"""Assemble what the incident report shows, from Streams, findings, btt and verdicts.

Everything heavy happens here, in Polars, before a figure is built: plotted
series are reduced (:mod:`blktrace_xen.report.downsample`) to a bounded number
of points, while every number printed in a table or the summary is computed on
the full frames and stays exact. The result, :class:`ReportData`, is plain
data that :mod:`figures`, :mod:`html` and :mod:`markdown` render without
touching the input frames again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from blktrace_xen import __version__, schema
from blktrace_xen.errors import SchemaError
from blktrace_xen.report.downsample import envelope, log_histogram, percentile_buckets
from blktrace_xen.streams import Streams

KEYS: list[str] = list(schema.RING_KEY)

# BLKIF_OP_* (xen/include/public/io/blkif.h) as the report prints them.
OP_NAMES: dict[int, str] = {
    0: "read",
    1: "write",
    2: "write_barrier",
    3: "flush_diskcache",
    4: "reserved_1",
    5: "discard",
    6: "indirect",
}

SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(schema.SEVERITIES)}


def op_name(op: int | None) -> str:
    """The report's name for a BLKIF_OP_* value."""
    if op is None:
        return "unknown"
    return OP_NAMES.get(op, f"op{op}")


def ring_label(domid: int, vdev: int, queue: int) -> str:
    """A ring as the capture names its interface: ``vbd/<domid>/<vdev>/q<queue>``."""
    return f"vbd/{domid}/{vdev}/q{queue}"


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """Limits that keep a report small and fast whatever the trace size."""

    max_points: int = 10_000  # per plotted trace
    point_budget: int = 200_000  # across all ring timelines together
    max_rings: int = 24  # rings that get their own timeline figure
    max_markers: int = 2_000  # control / finding markers per figure before bucketing
    max_findings_detail: int = 200  # findings with an evidence table
    max_findings_per_rule: int = 20
    latency_buckets: int = 500
    max_violations: int = 50  # replay violations listed per logic


@dataclass(frozen=True, slots=True, kw_only=True)
class RingView:
    """One plotted ring: reduced series plus its markers."""

    key: tuple[int, int, int]
    label: str
    anchor: str
    nr_ents: int | None
    inflight: pl.DataFrame  # t_s, inflight, exact
    occupancy: pl.DataFrame  # t_s, occupancy, exact
    control: pl.DataFrame  # t_s, kind, n, text
    findings: pl.DataFrame  # t_s, rule, severity, n, text, anchor


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingView:
    """One finding with its evidence, as shown in the evidence section."""

    anchor: str
    rule: str
    severity: str
    ring: str
    ring_anchor: str | None
    t_s: float
    t_end_s: float | None
    id: int | None
    idx: int | None
    message: str
    confidence: float | None
    evidence: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictView:
    """One replay logic's verdict, normalised for side-by-side display."""

    logic: str
    verdict: str
    n_violations: int
    by_invariant: dict[str, int]
    violations: pl.DataFrame  # invariant, t_s, ring, id, message (capped)
    caveats: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportData:
    """Everything the HTML and Markdown writers render."""

    title: str
    verdict: str
    summary: dict[str, Any]
    ring_table: pl.DataFrame
    rings: list[RingView]
    timeline: pl.DataFrame  # findings over all rings: t_s, ring, rule, severity, n, text, anchor
    op_table: pl.DataFrame
    latency_hist: pl.DataFrame  # op, lo_us, hi_us, count
    latency_time: pl.DataFrame  # op, t_s, n, p50_us, p99_us, max_us, exact
    btt: pl.DataFrame | None
    rule_table: pl.DataFrame
    findings: list[FindingView]
    verdicts: list[VerdictView]
    provenance: dict[str, Any]
    generated: str | None = None
    options: ReportOptions = field(default_factory=ReportOptions)


def _ring_keys(streams: Streams, findings: pl.DataFrame) -> pl.DataFrame:
    # unique() per frame first: concatenating 10 M-row key columns costs seconds.
    frames = [
        f.select(KEYS).unique().cast({"domid": pl.UInt16, "vdev": pl.UInt32, "queue": pl.UInt16})
        for f in (
            streams.rings,
            streams.io,
            streams.requests,
            streams.responses,
            streams.snapshots,
            findings,
        )
    ]
    return pl.concat(frames).drop_nulls().unique().sort(KEYS)


def _time_bounds(streams: Streams, findings: pl.DataFrame) -> tuple[int, int]:
    starts: list[pl.Series] = [
        streams.io["req_ns"],
        streams.requests["ns"],
        streams.responses["ns"],
        streams.control["ns"],
        streams.snapshots["ns"],
        findings["ns"],
        streams.lost["ns"],
    ]
    ends: list[pl.Series] = [*starts, streams.io["rsp_ns"], findings["ns_end"]]
    lo = [int(s.cast(pl.Int64).min()) for s in starts if s.null_count() < s.len()]  # type: ignore[arg-type]
    hi = [int(s.cast(pl.Int64).max()) for s in ends if s.null_count() < s.len()]  # type: ignore[arg-type]
    t0 = min(lo) if lo else 0
    t1 = max(hi) if hi else t0
    return t0, t1


def _seconds(col: str, t0: int) -> pl.Expr:
    return ((pl.col(col) - t0).cast(pl.Float64) / 1e9).alias("t_s")


def _inflight_sweep(io: pl.DataFrame, t0: int) -> pl.DataFrame:
    """In-flight requests per ring after every issue and completion, in time order.

    Issues sort before completions at the same nanosecond (stable sort of the
    concatenation), so a zero-latency request counts as in flight for an instant.
    """
    issued = io.filter(pl.col("req_ns").is_not_null()).select(
        *KEYS, pl.col("req_ns").alias("ns"), pl.lit(1, pl.Int32).alias("d")
    )
    done = io.filter(pl.col("rsp_ns").is_not_null() & pl.col("req_ns").is_not_null()).select(
        *KEYS, pl.col("rsp_ns").alias("ns"), pl.lit(-1, pl.Int32).alias("d")
    )
    # One packed u64 window key: a window over three columns costs about twice as much.
    packed = (
        pl.col("domid").cast(pl.UInt64) * (1 << 48)
        + pl.col("vdev").cast(pl.UInt64) * (1 << 16)
        + pl.col("queue").cast(pl.UInt64)
    )
    return (
        pl.concat([issued, done])
        .sort("ns", maintain_order=True)
        .select(*KEYS, _seconds("ns", t0), pl.col("d").cum_sum().over(packed).alias("inflight"))
    )


def _occupancy(snapshots: pl.DataFrame, t0: int) -> pl.DataFrame:
    """Published, unanswered entries per snapshot: req_prod - rsp_prod (u32 wrap-safe)."""
    diff = (pl.col("req_prod").cast(pl.Int64) - pl.col("rsp_prod").cast(pl.Int64)) % (1 << 32)
    signed = pl.when(diff >= 1 << 31).then(diff - (1 << 32)).otherwise(diff)
    return snapshots.sort("ns", maintain_order=True).select(
        *KEYS, _seconds("ns", t0), signed.alias("occupancy")
    )


def _bucket_markers(
    df: pl.DataFrame, *, group: list[str], max_markers: int, agg: list[pl.Expr]
) -> pl.DataFrame:
    """Markers as they are, or one per (group, time bucket) when there are too many."""
    if df.height <= max_markers:
        return df.with_columns(pl.lit(1, pl.UInt32).alias("n"))
    lo = df["t_s"].min()
    hi = df["t_s"].max()
    n_buckets = max(1, max_markers // max(1, df.select(group).n_unique()))
    width = (float(hi) - float(lo)) / n_buckets or 1.0  # type: ignore[arg-type]
    return (
        df.with_columns(((pl.col("t_s") - lo) / width).floor().cast(pl.Int64).alias("_b"))
        .group_by([*group, "_b"])
        .agg(pl.col("t_s").min(), pl.len().cast(pl.UInt32).alias("n"), *agg)
        .sort(["t_s", *group])
        .drop("_b")
    )


def _control_markers(
    control: pl.DataFrame, key: tuple[int, int, int], t0: int, max_markers: int
) -> pl.DataFrame:
    """Control events of one ring, including domain-wide and all-queue ones."""
    domid, vdev, queue = key
    rows = control.filter(
        (pl.col("domid") == domid)
        & (pl.col("vdev").is_null() | (pl.col("vdev") == vdev))
        & (pl.col("queue").is_null() | (pl.col("queue") == queue))
    )
    text = pl.concat_str(
        [
            pl.col("kind").cast(pl.String),
            pl.lit(" ("),
            pl.col("side").cast(pl.String).fill_null("?"),
            pl.lit(")"),
            pl.when(pl.col("value").is_not_null())
            .then(pl.lit(" value=") + pl.col("value").cast(pl.String))
            .otherwise(pl.lit("")),
            pl.when(pl.col("detail").is_not_null())
            .then(pl.lit(" ") + pl.col("detail"))
            .otherwise(pl.lit("")),
        ]
    )
    base = rows.sort("ns", maintain_order=True).select(
        _seconds("ns", t0), pl.col("kind").cast(pl.String), text.alias("text")
    )
    return _bucket_markers(
        base,
        group=["kind"],
        max_markers=max_markers,
        agg=[pl.col("text").first()],
    )


def _finding_text() -> pl.Expr:
    return pl.concat_str(
        [pl.col("rule"), pl.lit(" ["), pl.col("severity"), pl.lit("] "), pl.col("message")],
        ignore_nulls=True,
    )


def _ordered_findings(findings: pl.DataFrame, t0: int) -> pl.DataFrame:
    """Findings in a fixed order (time, rule, ring, id, idx) with their anchors."""
    ordered = findings.sort(
        ["ns", "rule", *KEYS, "id", "idx", "message"], nulls_last=True, maintain_order=True
    )
    label = (
        pl.when(pl.all_horizontal(pl.col(KEYS).is_not_null()))
        .then(
            pl.concat_str(
                [
                    pl.lit("vbd/"),
                    pl.col("domid").cast(pl.String),
                    pl.lit("/"),
                    pl.col("vdev").cast(pl.String),
                    pl.lit("/q"),
                    pl.col("queue").cast(pl.String),
                ]
            )
        )
        .when(pl.col("domid").is_not_null())
        .then(pl.lit("dom") + pl.col("domid").cast(pl.String))
        .otherwise(pl.lit("(global)"))
    )
    return ordered.with_row_index("_i").with_columns(
        _seconds("ns", t0),
        ((pl.col("ns_end") - t0).cast(pl.Float64) / 1e9).alias("t_end_s"),
        pl.col("severity").cast(pl.String),
        label.alias("ring"),
        (pl.lit("f-") + pl.col("_i").cast(pl.String)).alias("anchor"),
    )


def _select_detail(ordered: pl.DataFrame, options: ReportOptions) -> pl.DataFrame:
    """Which findings get an evidence table: worst first, a few per rule, in time order."""
    rank = pl.col("severity").replace_strict(SEVERITY_RANK, return_dtype=pl.Int64)
    return (
        ordered.filter(pl.int_range(pl.len()).over("rule") < options.max_findings_per_rule)
        .with_columns(rank.alias("_rank"))
        .sort(["_rank", "_i"], descending=[True, False])
        .head(options.max_findings_detail)
        .sort("_i")
    )


def _parse_evidence(text: str | None) -> Any:
    if text is None or text == "":
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"evidence": text}  # shown verbatim: evidence is never dropped


def _ring_table(
    keys: pl.DataFrame,
    streams: Streams,
    findings: pl.DataFrame,
    sweep: pl.DataFrame,
    t0: int,
) -> pl.DataFrame:
    io = streams.io
    per_io = io.group_by(KEYS).agg(
        pl.len().alias("requests"),
        (pl.col("rsp_ns").is_not_null()).sum().alias("completed"),
        (pl.col("rsp_ns").is_null()).sum().alias("unanswered"),
        (pl.col("status").is_not_null() & (pl.col("status") != 0)).sum().alias("errors"),
        pl.col("session").n_unique().alias("sessions"),
        ((pl.col("req_ns").min() - t0).cast(pl.Float64) / 1e9).alias("first_s"),
        ((pl.max_horizontal(pl.col("req_ns").max(), pl.col("rsp_ns").max()) - t0) / 1e9)
        .cast(pl.Float64)
        .alias("last_s"),
    )
    per_sweep = sweep.group_by(KEYS).agg(pl.col("inflight").max().alias("max_inflight"))
    rank = pl.col("severity").cast(pl.String).replace_strict(SEVERITY_RANK, return_dtype=pl.Int64)
    per_findings = (
        findings.filter(pl.col("vdev").is_not_null() & pl.col("queue").is_not_null())
        .with_columns(rank.alias("_rank"))
        .group_by(KEYS)
        .agg(
            pl.len().alias("findings"),
            pl.col("severity").cast(pl.String).sort_by("_rank").last().alias("worst"),
        )
    )
    per_gaps = streams.gaps.group_by(KEYS).agg(pl.col("count").sum().alias("unseen_entries"))
    nr_ents = streams.rings.group_by(KEYS).agg(pl.col("nr_ents").max())
    table = keys
    for part in (per_io, per_sweep, per_findings, per_gaps, nr_ents):
        table = table.join(part, on=KEYS, how="left", nulls_equal=True)
    zero = ["requests", "completed", "unanswered", "errors", "sessions", "findings"]
    zero += ["unseen_entries", "max_inflight"]
    table = table.with_columns(pl.col(c).fill_null(0).cast(pl.Int64) for c in zero)
    labels = [ring_label(*k) for k in table.select(KEYS).iter_rows()]
    return table.with_columns(pl.Series("ring", labels, dtype=pl.String)).select(
        "ring",
        *KEYS,
        "nr_ents",
        "sessions",
        "requests",
        "completed",
        "unanswered",
        "errors",
        "max_inflight",
        "unseen_entries",
        "findings",
        "worst",
        "first_s",
        "last_s",
    )


def _plotted_rings(ring_table: pl.DataFrame, max_rings: int) -> list[tuple[int, int, int]]:
    """Rings with the worst findings first, then the busiest; shown in key order."""
    rank = pl.col("worst").replace_strict(SEVERITY_RANK, default=-1, return_dtype=pl.Int64)
    chosen = (
        ring_table.with_columns(rank.alias("_rank"))
        .sort(["_rank", "findings", "requests", *KEYS], descending=[True, True, True, *[False] * 3])
        .head(max_rings)
        .sort(KEYS)
    )
    return [(int(d), int(v), int(q)) for d, v, q in chosen.select(KEYS).iter_rows()]


def _op_table(io: pl.DataFrame) -> pl.DataFrame:
    lat_us = pl.col("latency_ns").cast(pl.Float64) / 1e3
    table = (
        io.group_by("operation")
        .agg(
            pl.len().alias("requests"),
            pl.col("latency_ns").is_not_null().sum().alias("completed"),
            (pl.col("status").is_not_null() & (pl.col("status") != 0)).sum().alias("errors"),
            lat_us.quantile(0.5, interpolation="linear").alias("p50_us"),
            lat_us.quantile(0.99, interpolation="linear").alias("p99_us"),
            lat_us.max().alias("max_us"),
        )
        .sort("operation", nulls_last=True)
    )
    names = [op_name(o) for o in table["operation"].to_list()]
    return table.with_columns(pl.Series("op", names, dtype=pl.String)).select(
        "op", "requests", "completed", "errors", "p50_us", "p99_us", "max_us"
    )


def _with_op_names(df: pl.DataFrame) -> pl.DataFrame:
    mapping = {k: v for k, v in OP_NAMES.items()}
    return df.with_columns(
        pl.col("operation")
        .replace_strict(mapping, default=None, return_dtype=pl.String)
        .fill_null(pl.lit("op") + pl.col("operation").cast(pl.String))
        .fill_null("unknown")
        .alias("op")
    )


def _latency(
    io: pl.DataFrame, t0: int, t1: int, options: ReportOptions
) -> tuple[pl.DataFrame, pl.DataFrame]:
    done = _with_op_names(
        io.filter(pl.col("latency_ns").is_not_null() & pl.col("req_ns").is_not_null())
    ).select("op", "operation", _seconds("req_ns", t0), pl.col("latency_ns"))
    hist = log_histogram(done, value="latency_ns", by=["operation", "op"]).select(
        "op", (pl.col("lo") / 1e3).alias("lo_us"), (pl.col("hi") / 1e3).alias("hi_us"), "count"
    )
    lat_us = (pl.col("latency_ns").cast(pl.Float64) / 1e3).alias("lat_us")
    parts = []
    for (op,), part in sorted(
        done.partition_by(["operation"], as_dict=True, maintain_order=True).items(),
        key=lambda kv: -1 if kv[0][0] is None else int(kv[0][0]),
    ):
        name = op_name(None if op is None else int(op))
        if part.height <= options.max_points:
            parts.append(
                part.sort("t_s", maintain_order=True).select(
                    pl.lit(name).alias("op"),
                    "t_s",
                    pl.lit(1, pl.UInt32).alias("n"),
                    lat_us.alias("p50_us"),
                    lat_us.alias("p99_us"),
                    lat_us.alias("max_us"),
                    pl.lit(True).alias("exact"),
                )
            )
        else:
            buckets = percentile_buckets(
                part.with_columns(lat_us),
                t="t_s",
                value="lat_us",
                t_min=0.0,
                t_max=(t1 - t0) / 1e9,
                n_buckets=options.latency_buckets,
            )
            parts.append(
                buckets.select(
                    pl.lit(name).alias("op"),
                    "t_s",
                    pl.col("n").cast(pl.UInt32),
                    pl.col("p50").alias("p50_us"),
                    pl.col("p99").alias("p99_us"),
                    pl.col("max").alias("max_us"),
                    pl.lit(False).alias("exact"),
                )
            )
    schema_ = {
        "op": pl.String,
        "t_s": pl.Float64,
        "n": pl.UInt32,
        "p50_us": pl.Float64,
        "p99_us": pl.Float64,
        "max_us": pl.Float64,
        "exact": pl.Boolean,
    }
    time = pl.concat(parts) if parts else pl.DataFrame(schema=schema_)
    return hist, time


def _verdict_views(
    verdicts: Sequence[Mapping[str, Any]], t0: int, options: ReportOptions
) -> list[VerdictView]:
    views = []
    for v in sorted(verdicts, key=lambda v: str(v.get("logic", ""))):
        if "logic" not in v or "verdict" not in v:
            raise SchemaError("verdict", ["a replay verdict needs 'logic' and 'verdict'"])
        rows = list(v.get("violations") or [])
        by_inv: dict[str, int] = {}
        for r in rows:
            name = str(r.get("invariant", "?"))
            by_inv[name] = by_inv.get(name, 0) + 1
        table = pl.DataFrame(
            {
                "invariant": [str(r.get("invariant", "")) for r in rows],
                "t_s": [
                    None if r.get("t_ns") is None else (int(r["t_ns"]) - t0) / 1e9 for r in rows
                ],
                "ring": [
                    ring_label(int(r["domid"]), int(r["vdev"]), int(r.get("queue") or 0))
                    if r.get("domid") is not None and r.get("vdev") is not None
                    else ""
                    for r in rows
                ],
                "id": [None if r.get("id") is None else int(r["id"]) for r in rows],
                "message": [str(r.get("message", "")) for r in rows],
            },
            schema={
                "invariant": pl.String,
                "t_s": pl.Float64,
                "ring": pl.String,
                "id": pl.UInt64,
                "message": pl.String,
            },
        ).sort(["t_s", "invariant", "ring", "id"], nulls_last=True, maintain_order=True)
        views.append(
            VerdictView(
                logic=str(v["logic"]),
                verdict=str(v["verdict"]),
                n_violations=len(rows),
                by_invariant=dict(sorted(by_inv.items())),
                violations=table.head(options.max_violations),
                caveats=[str(c) for c in v.get("caveats") or []],
            )
        )
    return views


def _provenance(streams: Streams, t0: int, tool_version: str) -> dict[str, Any]:
    meta = streams.meta
    inputs = sorted(
        (
            {
                "path": str(i.get("path", "")),
                "sha256": str(i.get("sha256", "")),
                "kind": str(i.get("kind", "")),
            }
            for i in meta.get("inputs") or []
        ),
        key=lambda i: i["path"],
    )
    lost = streams.lost
    lost_by_cpu = (
        lost.group_by("cpu").agg(pl.col("count").sum()).sort("cpu").iter_rows()
        if lost.height
        else []
    )
    return {
        "tool_version": tool_version,
        "inputs": inputs,
        "cpu_mhz": meta.get("cpu_mhz"),
        "cpu_mhz_default": bool(meta.get("cpu_mhz_default", False)),
        "t0_ns": t0,
        "t0_tsc": meta.get("t0_tsc"),
        "lost_records": int(lost["count"].sum() or 0) if lost.height else 0,
        "lost_windows": lost.height,
        "lost_by_cpu": {str(c): int(n) for c, n in lost_by_cpu},
        "unseen_entries": int(streams.gaps["count"].sum() or 0) if streams.gaps.height else 0,
    }


def verdict_sentence(
    summary: Mapping[str, Any],
    worst: FindingView | None,
    verdicts: Sequence[VerdictView],
) -> str:
    """The whole report in one sentence, for the top of the page and the mail subject."""
    rings = summary["rings"]
    if summary["findings_total"] == 0:
        text = (
            f"No findings on {rings} ring{'s' if rings != 1 else ''} "
            f"({summary['requests']:,} requests over {summary['span_s']:.3f} s)."
        )
    else:
        by_sev = summary["findings_by_severity"]
        parts = [f"{by_sev[s]} {s}" for s in reversed(schema.SEVERITIES) if by_sev.get(s)]
        text = (
            f"{summary['findings_total']:,} finding{'s' if summary['findings_total'] != 1 else ''}"
            f" ({', '.join(parts)}) on {summary['rings_with_findings']} of {rings} "
            f"ring{'s' if rings != 1 else ''}"
        )
        if worst is not None:
            text += f"; most severe: {worst.rule} on {worst.ring} at {worst.t_s:.6f} s: "
            text += worst.message.rstrip(".")
        text += "."
    if verdicts:
        said = [
            f"{v.logic} {v.verdict}"
            + (f" ({v.n_violations} violation{'s' if v.n_violations != 1 else ''})")
            for v in verdicts
        ]
        text += " Replay: " + ", ".join(said) + "."
    return text


def assemble(
    streams: Streams,
    findings: pl.DataFrame,
    *,
    btt: pl.DataFrame | None = None,
    verdicts: Sequence[Mapping[str, Any]] = (),
    tool_version: str = __version__,
    title: str = "blktrace-xen incident report",
    generated: str | None = None,
    options: ReportOptions | None = None,
) -> ReportData:
    """Build a :class:`ReportData` from the analysed streams.

    Parameters
    ----------
    streams
        The decoded streams (every frame in its :mod:`blktrace_xen.schema` schema).
    findings
        The analyses' findings (``FINDINGS_SCHEMA``); checked, raises SchemaError.
    btt
        The btt-style table from the analyses, shown as given.
    verdicts
        Replay verdicts, ``{"logic", "verdict", "violations": [...], "caveats"}``.
    generated
        A timestamp to print; None keeps the report byte-for-byte reproducible.
    """
    opts = options or ReportOptions()
    schema.validate(findings, "findings")
    for name, frame in streams.tables().items():
        schema.validate(frame, name)
    t0, t1 = _time_bounds(streams, findings)
    keys = _ring_keys(streams, findings)
    sweep = _inflight_sweep(streams.io, t0)
    ring_table = _ring_table(keys, streams, findings, sweep, t0)
    plotted = _plotted_rings(ring_table, opts.max_rings)

    ordered = _ordered_findings(findings, t0)
    detail = _select_detail(ordered, opts)
    ring_anchor = {ring_label(*k): f"ring-{i}" for i, k in enumerate(plotted)}
    finding_views = [
        FindingView(
            anchor=r["anchor"],
            rule=r["rule"],
            severity=r["severity"],
            ring=r["ring"],
            ring_anchor=ring_anchor.get(r["ring"]),
            t_s=float(r["t_s"]) if r["t_s"] is not None else 0.0,
            t_end_s=r["t_end_s"],
            id=r["id"],
            idx=r["idx"],
            message=r["message"] or "",
            confidence=r["confidence"],
            evidence=_parse_evidence(r["evidence"]),
        )
        for r in detail.iter_rows(named=True)
    ]
    detailed = set(detail["anchor"].to_list())
    # A marker links to its evidence table when it has one, else to its rule's row.
    link = (
        pl.when(pl.col("anchor").is_in(list(detailed)))
        .then(pl.col("anchor"))
        .otherwise(pl.lit("rule-") + pl.col("rule"))
    )
    markers = ordered.with_columns(_finding_text().alias("text"), link.alias("anchor"))

    per_ring_points = max(100, min(opts.max_points, opts.point_budget // max(1, 2 * len(plotted))))
    plotted_df = pl.DataFrame(
        plotted, schema={"domid": pl.UInt16, "vdev": pl.UInt32, "queue": pl.UInt16}, orient="row"
    )
    inflight = envelope(
        sweep.join(plotted_df, on=KEYS, how="semi"),
        t="t_s",
        value="inflight",
        max_points=per_ring_points,
        by=KEYS,
    )
    occupancy = envelope(
        _occupancy(streams.snapshots, t0).join(plotted_df, on=KEYS, how="semi"),
        t="t_s",
        value="occupancy",
        max_points=per_ring_points,
        by=KEYS,
    )
    inflight_by = inflight.partition_by(KEYS, as_dict=True, include_key=False)
    occupancy_by = occupancy.partition_by(KEYS, as_dict=True, include_key=False)
    nr_ents = {
        (int(d), int(v), int(q)): n
        for d, v, q, n in ring_table.select(*KEYS, "nr_ents").iter_rows()
    }
    ring_views = []
    for i, key in enumerate(plotted):
        on_ring = markers.filter(
            (pl.col("domid") == key[0]) & (pl.col("vdev") == key[1]) & (pl.col("queue") == key[2])
        ).select("t_s", "rule", "severity", "text", "anchor")
        ring_views.append(
            RingView(
                key=key,
                label=ring_label(*key),
                anchor=f"ring-{i}",
                nr_ents=None if nr_ents.get(key) is None else int(nr_ents[key]),
                inflight=inflight_by.get(key, inflight.clear().drop(KEYS)),
                occupancy=occupancy_by.get(key, occupancy.clear().drop(KEYS)),
                control=_control_markers(streams.control, key, t0, opts.max_markers),
                findings=_bucket_markers(
                    on_ring,
                    group=["rule"],
                    max_markers=opts.max_markers,
                    agg=[
                        pl.col("severity").first(),
                        pl.col("text").first(),
                        pl.col("anchor").first(),
                    ],
                ),
            )
        )
    timeline = _bucket_markers(
        markers.select("t_s", "ring", "rule", "severity", "text", "anchor"),
        group=["ring", "rule"],
        max_markers=opts.max_markers,
        agg=[pl.col("severity").first(), pl.col("text").first(), pl.col("anchor").first()],
    )

    rule_table = (
        ordered.group_by("rule")
        .agg(
            pl.col("severity")
            .sort_by(pl.col("severity").replace_strict(SEVERITY_RANK, return_dtype=pl.Int64))
            .last()
            .alias("severity"),
            pl.len().alias("count"),
            pl.col("ring").n_unique().alias("rings"),
            pl.col("t_s").min().alias("first_s"),
            pl.col("message").first().alias("example"),
        )
        .sort("rule")
    )

    op_table = _op_table(streams.io)
    latency_hist, latency_time = _latency(streams.io, t0, t1, opts)
    verdict_views = _verdict_views(verdicts, t0, opts)

    by_sev = {s: 0 for s in schema.SEVERITIES}
    for sev, n in findings.group_by("severity").len().iter_rows():
        by_sev[str(sev)] = int(n)
    session_frames = [
        f.select(*KEYS, "session").unique()
        for f in (streams.io, streams.requests, streams.responses)
    ]
    sessions = pl.concat(session_frames).drop_nulls().unique().height
    provenance = _provenance(streams, t0, tool_version)
    summary: dict[str, Any] = {
        "rings": ring_table.height,
        "rings_plotted": len(plotted),
        "rings_with_findings": int((ring_table["findings"] > 0).sum()),
        "sessions": sessions,
        "t0_ns": t0,
        "t_end_ns": t1,
        "span_s": (t1 - t0) / 1e9,
        "requests": streams.io.height,
        "requests_published": streams.requests.height,
        "responses": streams.responses.height,
        "completed": int(streams.io["rsp_ns"].is_not_null().sum()),
        "unanswered": int(streams.io["rsp_ns"].is_null().sum()),
        "errors": int((streams.io["status"].is_not_null() & (streams.io["status"] != 0)).sum()),
        "control_events": streams.control.height,
        "snapshots": streams.snapshots.height,
        "findings_total": findings.height,
        "findings_by_severity": by_sev,
        "findings_by_rule": {r: int(n) for r, n in rule_table.select("rule", "count").iter_rows()},
        "lost_records": provenance["lost_records"],
        "unseen_entries": provenance["unseen_entries"],
    }
    worst = None
    if finding_views:
        worst = max(finding_views, key=lambda f: (SEVERITY_RANK[f.severity], -f.t_s))
    return ReportData(
        title=title,
        verdict=verdict_sentence(summary, worst, verdict_views),
        summary=summary,
        ring_table=ring_table,
        rings=ring_views,
        timeline=timeline,
        op_table=op_table,
        latency_hist=latency_hist,
        latency_time=latency_time,
        btt=btt,
        rule_table=rule_table,
        findings=finding_views,
        verdicts=verdict_views,
        provenance=provenance,
        generated=generated,
        options=opts,
    )

"""Reduce large series to a bounded number of plot points, in Polars.

A browser cannot draw 10 M points (the prototype's 363 MB report took Chromium
five minutes), so every series that goes into a figure is reduced here first.
The reductions keep what an incident reader looks for: the extremes of a line
(min/max per time bucket, so a spike never disappears), the tail of a latency
distribution (p50/p99/max per bucket), and exact counts in histograms. Tables
never go through this module: their counts stay exact.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

# Latency histograms use log-spaced bins: blkif latencies span microseconds
# (page cache hits in the backend) to seconds (a stalled ring).
HISTOGRAM_BINS = 60


def bucket_width(t_min: float, t_max: float, n_buckets: int) -> float:
    """Width of ``n_buckets`` equal buckets covering ``[t_min, t_max]`` (never 0)."""
    span = t_max - t_min
    if span <= 0 or n_buckets <= 0:
        return 1.0
    return span / n_buckets


def _extremes(t: np.ndarray, v: np.ndarray, n_buckets: int) -> np.ndarray:
    """Row positions of the first minimum and first maximum of each time bucket.

    ``t`` is sorted, so buckets are contiguous runs and every step is one
    vectorised pass (a Polars group_by with ``arg_min`` per bucket took
    seconds on 10 M rows).
    """
    span = float(t[-1] - t[0])
    if span > 0:
        scaled = (t - t[0]) / span * n_buckets
        bucket = np.minimum(scaled.astype(np.int64), n_buckets - 1)
    else:
        bucket = np.zeros(t.size, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    seg = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, t.size]))
    picks = []
    for reduce in (np.minimum, np.maximum):
        best = reduce.reduceat(v, starts)
        hits = np.flatnonzero(v == best[seg])
        _, first = np.unique(seg[hits], return_index=True)
        picks.append(hits[first])
    return np.unique(np.concatenate(picks))


def envelope(
    df: pl.DataFrame,
    *,
    t: str,
    value: str,
    max_points: int,
    by: list[str] | None = None,
) -> pl.DataFrame:
    """Min/max envelope of ``value`` over time, at most ``max_points`` rows per group.

    Groups with at most ``max_points`` rows are returned unchanged (exact).
    Larger groups are cut into ``max_points // 2`` equal time buckets and each
    bucket contributes the row holding its minimum and the row holding its
    maximum, in time order, so peaks and troughs survive and no point is
    invented. Output columns: ``by..., t, value, exact`` (``exact`` is False
    for reduced groups), groups in key order.

    Rows should already be in time order within each group (sorting 10 M rows
    by several keys costs seconds, so callers sort once by time); a group that
    is not is sorted here.
    """
    keys = by or []
    base = df.select([*keys, t, value])
    if keys:
        parts = base.partition_by(keys, as_dict=True, maintain_order=True)
        groups = [
            parts[k] for k in sorted(parts, key=lambda k: tuple(-1 if x is None else x for x in k))
        ]
    else:
        groups = [base]
    n_buckets = max(1, max_points // 2)
    out = []
    for part in groups:
        if part.height <= max_points:
            out.append(part.with_columns(pl.lit(True).alias("exact")))
            continue
        ordered = part if part[t].is_sorted() else part.sort(t, maintain_order=True)
        keep = _extremes(ordered[t].to_numpy(), ordered[value].to_numpy(), n_buckets)
        out.append(ordered[keep].with_columns(pl.lit(False).alias("exact")))
    if not out:
        return base.with_columns(pl.lit(True).alias("exact"))
    return pl.concat(out)


def percentile_buckets(
    df: pl.DataFrame,
    *,
    t: str,
    value: str,
    t_min: float,
    t_max: float,
    n_buckets: int,
    by: list[str] | None = None,
) -> pl.DataFrame:
    """Per time bucket: ``n``, ``p50``, ``p99`` and ``max`` of ``value``.

    Buckets are equal slices of ``[t_min, t_max]``; ``t`` in the output is the
    bucket's centre. Empty buckets are absent. Percentiles use linear
    interpolation (as numpy's default), so a bucket of one row reports that row.
    """
    keys = by or []
    width = bucket_width(t_min, t_max, n_buckets)
    bucket = (
        ((pl.col(t) - t_min) / width).floor().clip(0, max(n_buckets - 1, 0)).cast(pl.Int64)
    ).alias("_bucket")
    return (
        df.select([*keys, t, value])
        .with_columns(bucket)
        .group_by([*keys, "_bucket"])
        .agg(
            pl.len().alias("n"),
            pl.col(value).quantile(0.5, interpolation="linear").alias("p50"),
            pl.col(value).quantile(0.99, interpolation="linear").alias("p99"),
            pl.col(value).max().cast(pl.Float64).alias("max"),
        )
        .with_columns((t_min + (pl.col("_bucket").cast(pl.Float64) + 0.5) * width).alias(t))
        .sort([*keys, "_bucket"])
        .select([*keys, t, "n", "p50", "p99", "max"])
    )


def log_histogram(
    df: pl.DataFrame,
    *,
    value: str,
    by: list[str] | None = None,
    bins: int = HISTOGRAM_BINS,
) -> pl.DataFrame:
    """Counts of positive ``value`` in log-spaced bins shared by every group.

    Bins are half-open ``[lo, hi)`` except the last, which holds the maximum.
    Values below 1 (a response stamped in the same nanosecond as its request)
    count in the first bin, so the per-group sum of ``count`` equals the
    group's row count exactly. Output: ``by..., lo, hi, count`` with ``lo`` /
    ``hi`` the bin edges in the unit of ``value``.
    """
    keys = by or []
    data = df.select([*keys, value]).filter(pl.col(value).is_not_null())
    if data.height == 0:
        return pl.DataFrame(
            schema={
                **{k: df.schema[k] for k in keys},
                "lo": pl.Float64,
                "hi": pl.Float64,
                "count": pl.UInt32,
            }
        )
    top = float(data.select(pl.col(value).max()).item())
    bottom = data.select(pl.col(value).filter(pl.col(value) >= 1).min()).item()
    log_hi = math.log10(max(top, 1.0))
    log_lo = math.log10(max(float(bottom or 1.0), 1.0))
    log_lo = min(log_lo, log_hi - 1e-6)  # one distinct value still gets a bin of width > 0
    step = (log_hi - log_lo) / bins
    index = (
        # + 1e-9: polars' log10(1000) is 2.9999999999999996; a value on an edge
        # belongs to the bin that starts there.
        ((pl.col(value).cast(pl.Float64).clip(lower_bound=1.0).log10() - log_lo) / step + 1e-9)
        .floor()
        .clip(0, bins - 1)
        .cast(pl.Int64)
        .alias("_bin")
    )
    return (
        data.with_columns(index)
        .group_by([*keys, "_bin"])
        .agg(pl.len().cast(pl.UInt32).alias("count"))
        .with_columns(
            (10 ** (log_lo + pl.col("_bin").cast(pl.Float64) * step)).alias("lo"),
            (10 ** (log_lo + (pl.col("_bin").cast(pl.Float64) + 1) * step)).alias("hi"),
        )
        .sort([*keys, "_bin"])
        .select([*keys, "lo", "hi", "count"])
    )

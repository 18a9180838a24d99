"""btt-style summary: per ring and op, how many, how fast, how deep, how reordered."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from blktrace_xen.analyses.emit import RING
from blktrace_xen.analyses.timeline import REQ, RSP, timeline
from blktrace_xen.errors import ModelUsageError
from blktrace_xen.streams import Streams

SECTOR_BYTES = 512


def _depth(streams: Streams, by: list[str]) -> pl.LazyFrame | None:
    """Queue depth (requests in flight on the ring, this one included) at each issue, by ``by``.

    The running count of requests minus responses misses requests issued
    before the trace began. Each response with no earlier request answers one
    of those, so at any time the ring also held every such response still to
    come: they are added back.
    """
    tl = timeline(streams).lazy().rename({"op": "operation"})
    if any(k not in tl.collect_schema().names() for k in by):
        return None
    unseen = ((pl.col("kind") == RSP) & pl.col("prev_kind").is_null()).cast(pl.Int64)
    still_to_come = unseen.sum().over(RING) - unseen.cum_sum().over(RING)
    reqs = tl.with_columns((pl.col("inflight") + still_to_come).alias("depth")).filter(
        pl.col("kind") == REQ
    )
    return reqs.group_by(by).agg(
        pl.col("depth").mean().alias("qd_mean"),
        pl.col("depth").quantile(0.5, "nearest").alias("qd_p50"),
        pl.col("depth").quantile(0.99, "nearest").alias("qd_p99"),
        pl.col("depth").max().alias("qd_max"),
    )


def btt_table(
    streams: Streams, *, by: Sequence[str] = ("domid", "vdev", "queue", "operation")
) -> pl.DataFrame:
    """One row per group of ``io`` (by ring and op by default), like btt's summary tables.

    Columns: the ``by`` keys, ``count`` (requests, equal to the streams'),
    ``completed``, ``errors`` (status != 0), ``span_ns`` (first issue to last
    completion), ``iops`` and ``mb_s`` (completed requests and bytes over the
    span), ``lat_mean_ns``, ``lat_p50_ns``, ``lat_p90_ns``, ``lat_p99_ns``,
    ``lat_max_ns``, queue depth at issue ``qd_mean``, ``qd_p50``, ``qd_p99``,
    ``qd_max`` (null when ``by`` has columns the timeline lacks), and reorder
    statistics ``reordered`` (completions with ``reorder != 0``),
    ``reorder_max`` (largest absolute distance), ``reorder_mean_abs``.
    """
    keys = list(by)
    missing = [k for k in keys if k not in streams.io.columns]
    if missing:
        raise ModelUsageError(f"btt_table: io has no column(s) {', '.join(missing)}")
    done = pl.col("rsp_ns").is_not_null()
    lat = pl.col("latency_ns").filter(done)
    span = (
        pl.max_horizontal(pl.col("rsp_ns").max(), pl.col("req_ns").max()) - pl.col("req_ns").min()
    ).alias("span_ns")
    table = (
        streams.io.lazy()
        .group_by(keys)
        .agg(
            pl.len().alias("count"),
            done.sum().alias("completed"),
            (pl.col("status").fill_null(0) != 0).sum().alias("errors"),
            span,
            (pl.col("nr_sectors").filter(done).sum() * SECTOR_BYTES).alias("bytes"),
            lat.mean().alias("lat_mean_ns"),
            lat.quantile(0.5, "nearest").alias("lat_p50_ns"),
            lat.quantile(0.9, "nearest").alias("lat_p90_ns"),
            lat.quantile(0.99, "nearest").alias("lat_p99_ns"),
            lat.max().alias("lat_max_ns"),
            (pl.col("reorder").fill_null(0) != 0).sum().alias("reordered"),
            pl.col("reorder").abs().max().alias("reorder_max"),
            pl.col("reorder").abs().mean().alias("reorder_mean_abs"),
        )
        .with_columns(
            pl.when(pl.col("span_ns") > 0)
            .then(pl.col("completed") / (pl.col("span_ns") / 1e9))
            .alias("iops"),
            pl.when(pl.col("span_ns") > 0)
            .then(pl.col("bytes") / 1e6 / (pl.col("span_ns") / 1e9))
            .alias("mb_s"),
        )
    )
    depth = _depth(streams, keys)
    if depth is not None:
        table = table.join(depth, on=keys, how="left", nulls_equal=True)
    else:
        table = table.with_columns(
            *(pl.lit(None, pl.Float64).alias(c) for c in ("qd_mean", "qd_p50", "qd_p99", "qd_max"))
        )
    order = [
        *keys,
        "count",
        "completed",
        "errors",
        "iops",
        "mb_s",
        "lat_mean_ns",
        "lat_p50_ns",
        "lat_p90_ns",
        "lat_p99_ns",
        "lat_max_ns",
        "qd_mean",
        "qd_p50",
        "qd_p99",
        "qd_max",
        "reordered",
        "reorder_max",
        "reorder_mean_abs",
        "span_ns",
        "bytes",
    ]
    return table.select(order).sort(keys, nulls_last=True).collect()

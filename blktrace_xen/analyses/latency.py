"""btt-style summary: per ring and op, how many, how fast, how deep, how reordered."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from blktrace_xen.analyses.batches import in_batch, ring_batches
from blktrace_xen.analyses.emit import RING, ring_key
from blktrace_xen.analyses.timeline import clear, effective_op, paired, requests, responses
from blktrace_xen.errors import ModelUsageError
from blktrace_xen.streams import Streams

SECTOR_BYTES = 512


def _count_before(
    rows: pl.DataFrame, events: pl.DataFrame, name: str, *, inclusive: bool
) -> pl.DataFrame:
    """Add ``name``: how many ``events`` of the row's ring came before it.

    An eager as-of join: polars 1.x runs the lazy one about ten times slower.
    """
    counted = events.select(
        ring_key().alias("_rk"), "ns", pl.int_range(1, pl.len() + 1).over(ring_key()).alias(name)
    )
    return rows.join_asof(
        counted,
        on="ns",
        by="_rk",
        strategy="backward",
        allow_exact_matches=inclusive,
        check_sortedness=False,
    ).with_columns(pl.col(name).fill_null(0))


def _depth(streams: Streams, by: list[str]) -> pl.LazyFrame | None:
    """Queue depth (requests in flight on the ring, this one included) at each issue, by ``by``.

    Requests so far minus responses before it (at equal ns a request counts
    first). That misses requests issued before the trace began; each
    response the streams' pairing calls an orphan answers one of those, so
    the orphans still to come are added back. As-of joins of the time-ordered
    frames, not a merged frame with windows.
    """
    req = requests(streams)
    names = set(req.columns) | {"operation"}
    if any(k not in names for k in by):
        return None
    rsp = responses(streams)
    facts = paired(streams)[1]
    orphans = facts.filter(pl.col("kind").cast(pl.String) == "orphan_response")
    if orphans.height:
        orphans = orphans.sort("ns", maintain_order=True)
    # Every depth is per ring: when the groups split by ring too, a few rings at a
    # time give the same groups without holding every request's counts at once.
    batches = ring_batches([req, rsp]) if set(RING) <= set(by) else None
    if batches is None:
        return _depth_of(req, rsp, orphans, by).lazy()
    return pl.concat(
        [_depth_of(req.filter(in_batch(b)), rsp.filter(in_batch(b)), orphans, by) for b in batches]
    ).lazy()


def _depth_of(
    req: pl.DataFrame, rsp: pl.DataFrame, orphans: pl.DataFrame, by: list[str]
) -> pl.DataFrame:
    """:func:`_depth`'s groups over these requests and responses (orphans of other rings unused)."""
    keys = [k for k in by if k != "operation"]
    rows = req.select(
        *keys,
        *([effective_op().alias("operation")] if "operation" in by else []),
        ring_key().alias("_rk"),
        "ns",
        pl.int_range(1, pl.len() + 1).over(ring_key()).alias("_issued"),
    )
    rows = _count_before(rows, rsp, "_answered", inclusive=False)
    depth = pl.col("_issued") - pl.col("_answered")
    if orphans.height:
        total = orphans.group_by(ring_key().alias("_rk")).agg(pl.len().alias("_orphans"))
        rows = _count_before(rows, orphans, "_orphans_seen", inclusive=False).join(
            total, on="_rk", how="left"
        )
        depth = depth + pl.col("_orphans").fill_null(0) - pl.col("_orphans_seen")
    return (
        rows.lazy()
        .with_columns(depth.alias("depth"))
        .group_by(by)
        .agg(
            pl.col("depth").mean().alias("qd_mean"),
            pl.col("depth").quantile(0.5, "nearest").alias("qd_p50"),
            pl.col("depth").quantile(0.99, "nearest").alias("qd_p99"),
            pl.col("depth").max().alias("qd_max"),
        )
        .collect()
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
    try:
        return _btt_table(streams, list(by))
    finally:
        clear()


def _btt_table(streams: Streams, keys: list[str]) -> pl.DataFrame:
    io = paired(streams)[0]
    missing = [k for k in keys if k not in io.columns]
    if missing:
        raise ModelUsageError(f"btt_table: io has no column(s) {', '.join(missing)}")
    done = pl.col("rsp_ns").is_not_null()
    lat = pl.col("latency_ns").filter(done)
    span = (
        pl.max_horizontal(pl.col("rsp_ns").max(), pl.col("req_ns").max()) - pl.col("req_ns").min()
    ).alias("span_ns")

    def groups(rows: pl.LazyFrame) -> pl.DataFrame:
        return rows.group_by(keys).agg(*aggs).collect()

    aggs = [
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
    ]
    # Groups that split by ring are summed a few rings at a time (same groups).
    batches = ring_batches([io]) if set(RING) <= set(keys) else None
    if batches is None:
        grouped = groups(io.lazy())
    else:
        grouped = pl.concat([groups(io.lazy().filter(in_batch(b))) for b in batches])
    table = grouped.lazy().with_columns(
        pl.when(pl.col("span_ns") > 0)
        .then(pl.col("completed") / (pl.col("span_ns") / 1e9))
        .alias("iops"),
        pl.when(pl.col("span_ns") > 0)
        .then(pl.col("bytes") / 1e6 / (pl.col("span_ns") / 1e9))
        .alias("mb_s"),
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

"""btt-style summary: per ring and op, how many, how fast, how deep, how reordered."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from blktrace_xen.analyses import rings
from blktrace_xen.analyses.batches import in_batch, ring_batches
from blktrace_xen.analyses.emit import RING, ring_key
from blktrace_xen.analyses.rings import (
    Grouped,
    chunks,
    count_before,
    dense_codes,
    group_stats,
    ring_frame,
    ring_keys,
    usable,
)
from blktrace_xen.analyses.timeline import (
    done,
    effective_op,
    events_by_ring,
    paired,
    requests,
    responses,
)
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
    if usable((req, rsp, orphans), [*RING, "ns"]):
        return _depth_sorted(streams, req, rsp, orphans, by).lazy()
    # Every depth is per ring: when the groups split by ring too, a few rings at a
    # time give the same groups without holding every request's counts at once.
    batches = ring_batches([req, rsp]) if set(RING) <= set(by) else None
    if batches is None:
        return _depth_of(req, rsp, orphans, by).lazy()
    return pl.concat(
        [_depth_of(req.filter(in_batch(b)), rsp.filter(in_batch(b)), orphans, by) for b in batches]
    ).lazy()


def _depth_sorted(
    streams: Streams, req: pl.DataFrame, rsp: pl.DataFrame, orphans: pl.DataFrame, by: list[str]
) -> pl.DataFrame:
    """:func:`_depth_of`'s groups from sorted NumPy arrays (no null ring key or ns).

    The same counts: ``_issued`` is the rank within the ring, ``_answered``
    the ring's responses strictly before, and the orphans likewise, each
    found by one search over the ring-grouped arrays instead of a window
    and an as-of join per frame. A few rings at a time (see :func:`chunks`).
    """
    groups = events_by_ring(streams)
    co = groups.codes_of(ring_keys(orphans))
    if co is None:  # an orphan of a ring with no event: code the three together
        (cq, cs, co), uniq = dense_codes([ring_keys(req), ring_keys(rsp), ring_keys(orphans)])
        q, s = Grouped.of(cq, len(uniq)), Grouped.of(cs, len(uniq))
        del cq, cs
    else:
        q, s, uniq = groups.req, groups.rsp, groups.uniq
    del groups
    o = Grouped.of(co, len(uniq))
    del co
    ns = [f["ns"].to_numpy() for f in (req, rsp, orphans)]
    orphans_total = np.diff(o.starts)

    def depth(g0: int, g1: int) -> tuple[Grouped, np.ndarray]:
        """These rings' requests (their part of ``q``, codes from 0) and depths."""
        rows = q.rows(g0, g1)
        part = Grouped(q.order[rows], q.codes[rows] - g0, q.starts[g0 : g1 + 1] - q.starts[g0])
        q_ns = ns[0][part.order]
        found = part.rank() + 1
        for other, other_ns in ((s, ns[1]), (o, ns[2])):
            if other.starts[g1] > other.starts[g0]:
                theirs = other.rows(g0, g1)
                b = Grouped(
                    other.order[theirs],
                    other.codes[theirs] - g0,
                    other.starts[g0 : g1 + 1] - other.starts[g0],
                )
                found -= count_before(part, q_ns, b, other_ns[b.order], inclusive=False)
        if orphans.height:
            found += orphans_total[g0:g1][part.codes]
        return part, found

    ranges = chunks([q, s, o])
    if set(RING) <= set(by) <= {*RING, "operation"}:
        op = (
            req.select(effective_op().fill_null(256).cast(pl.UInt16))[:, 0].to_numpy()
            if "operation" in by
            else None
        )
        parts = []
        for g0, g1 in ranges:
            if q.starts[g1] == q.starts[g0]:
                continue  # rings with responses only: no depth
            part, found = depth(g0, g1)
            table = _depth_by_ring(part, uniq[g0:g1], found, op, by)
            if table is None:
                break
            parts.append(table)
        else:
            return pl.concat(parts) if parts else _depth_of(req, rsp, orphans, by)
    # Other groups: each request's depth in its own row, grouped by polars.
    in_rows = np.empty(req.height, dtype=np.int64)
    for g0, g1 in ranges:
        part, found = depth(g0, g1)
        in_rows[part.order] = found
    keys = [k for k in by if k != "operation"]
    return (
        req.lazy()
        .select(*keys, *([effective_op().alias("operation")] if "operation" in by else []))
        .with_columns(pl.Series("depth", in_rows, dtype=pl.Int64))
        .group_by(by)
        .agg(*_DEPTH_AGGS)
        .collect()
    )


_DEPTH_AGGS = (
    pl.col("depth").mean().alias("qd_mean"),
    pl.col("depth").quantile(0.5, "nearest").alias("qd_p50"),
    pl.col("depth").quantile(0.99, "nearest").alias("qd_p99"),
    pl.col("depth").max().alias("qd_max"),
)


def _depth_by_ring(
    q: Grouped, uniq: np.ndarray, depth: np.ndarray, op: np.ndarray | None, by: list[str]
) -> pl.DataFrame | None:
    """The depth groups of these rings when groups are the ring (and op): one sort, or None.

    The rows are already grouped by ring; the op (``op``: a code per request
    row, 256 for null, a group of its own as in polars) splits them further.
    """
    groups = q.codes.astype(np.int64)
    nops = 1
    if op is not None:
        nops = 257
        groups *= nops
        groups += op[q.order]
    present = np.bincount(groups, minlength=len(uniq) * nops) > 0
    dense = np.cumsum(present) - 1
    which = np.flatnonzero(present)
    stats = group_stats(dense[groups], len(which), depth, (0.5, 0.99))
    if stats is None:
        return None
    cols = ring_frame(uniq[which // nops]).with_columns(
        pl.Series("operation", which % nops, dtype=pl.UInt16).replace(256, None).cast(pl.UInt8)
    )
    return cols.select(by).with_columns(
        pl.Series("qd_mean", stats.total / stats.count, dtype=pl.Float64),
        pl.Series("qd_p50", stats.quantiles[0], dtype=pl.Float64),
        pl.Series("qd_p99", stats.quantiles[1], dtype=pl.Float64),
        pl.Series("qd_max", stats.max, dtype=pl.Int64),
    )


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
    return rows.lazy().with_columns(depth.alias("depth")).group_by(by).agg(*_DEPTH_AGGS).collect()


_NO_OP = 256  # the op code of a null op (its own group, as in polars)


def _ring_op_code(io: pl.DataFrame, keys: list[str]) -> tuple[pl.Series, np.ndarray] | None:
    """``_g``, one u32 per row naming its (ring, op) group, and the ring keys it codes; or None.

    None unless the groups are the ring (and op) and no ring key is null.
    """
    if not set(RING) <= set(keys) <= {*RING, "operation"} or not usable([io], RING):
        return None
    (ring,), uniq = dense_codes([ring_keys(io)])
    group = ring.astype(np.uint32) * np.uint32(_NO_OP + 1)
    del ring
    if "operation" in keys:
        group += io["operation"].fill_null(_NO_OP).cast(pl.UInt16).to_numpy()
    return pl.Series("_g", group, dtype=pl.UInt32), uniq


def _ring_op_keys(code: pl.Series, uniq: np.ndarray, keys: list[str]) -> pl.DataFrame:
    """The ``keys`` columns of :func:`_ring_op_code`'s groups."""
    g = code.to_numpy()
    op = pl.Series("operation", g % (_NO_OP + 1), dtype=pl.UInt16)
    return (
        ring_frame(uniq[g // (_NO_OP + 1)])
        .with_columns(op.replace(_NO_OP, None).cast(pl.UInt8))
        .select(keys)
    )


def _rates(grouped: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """``iops`` and ``mb_s``: completed requests and bytes per second of span (null if none).

    In NumPy, one fixed formula on the aggregated integers: polars evaluated
    ``completed / (span_ns / 1e9)`` in more than one way from run to run (the
    last bit differed with 2 threads).
    """
    span = grouped["span_ns"].cast(pl.Float64).fill_null(0.0).to_numpy()
    secs = np.where(span > 0, span / 1e9, np.nan)  # NaN, then null: no span, no rate

    def rate(name: str, per_second: np.ndarray) -> pl.Series:
        return pl.Series(name, per_second, dtype=pl.Float64).fill_nan(None)

    # Nulls come through as NaN (a null count or byte sum gives a null rate, as before).
    completed = grouped["completed"].cast(pl.Float64).to_numpy()
    mb = grouped["bytes"].cast(pl.Float64).to_numpy() / 1e6
    return rate("iops", completed / secs), rate("mb_s", mb / secs)


BTT_BY = ("domid", "vdev", "queue", "operation")


def btt_table(streams: Streams, *, by: Sequence[str] = BTT_BY) -> pl.DataFrame:
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
        done()


def _btt_table(streams: Streams, keys: list[str]) -> pl.DataFrame:
    io = paired(streams)[0]
    missing = [k for k in keys if k not in io.columns]
    if missing:
        raise ModelUsageError(f"btt_table: io has no column(s) {', '.join(missing)}")
    done = pl.col("rsp_ns").is_not_null()
    # Nulls, not a filter, for the rows not done: every aggregation skips them,
    # and polars keeps its fast grouped path (a filter inside an aggregation
    # sends every aggregation of the query down the slow one, ~4x the CPU).
    lat = pl.when(done).then(pl.col("latency_ns"))
    span = (
        pl.max_horizontal(pl.col("rsp_ns").max(), pl.col("req_ns").max()) - pl.col("req_ns").min()
    ).alias("span_ns")
    # One integer key per (ring, op) when the groups are those: a single-column
    # group_by hashes less and holds less than one over the four columns.
    code = _ring_op_code(io, keys) if rings.ENABLED else None
    rows, by = (io.lazy(), keys) if code is None else (io.lazy().with_columns(code[0]), ["_g"])
    sums = rows.group_by(by).agg(
        pl.len().alias("count"),
        done.sum().alias("completed"),
        (pl.col("status").fill_null(0) != 0).sum().alias("errors"),
        span,
        (pl.when(done).then(pl.col("nr_sectors")).sum() * SECTOR_BYTES).alias("bytes"),
        lat.mean().alias("lat_mean_ns"),
        lat.max().alias("lat_max_ns"),
        (pl.col("reorder").fill_null(0) != 0).sum().alias("reordered"),
        pl.col("reorder").abs().max().alias("reorder_max"),
        pl.col("reorder").abs().mean().alias("reorder_mean_abs"),
    )
    # The quantiles on their own: grouped with the sums above, they slow every one.
    quantiles = (
        rows.select(*by, lat.alias("_lat"))
        .group_by(by)
        .agg(
            pl.col("_lat").quantile(0.5, "nearest").alias("lat_p50_ns"),
            pl.col("_lat").quantile(0.9, "nearest").alias("lat_p90_ns"),
            pl.col("_lat").quantile(0.99, "nearest").alias("lat_p99_ns"),
        )
    )
    grouped = sums.collect().join(quantiles.collect(), on=by, how="left", nulls_equal=True)
    if code is not None:
        grouped = pl.concat(
            [_ring_op_keys(grouped["_g"], code[1], keys), grouped], how="horizontal"
        )
    table = grouped.drop("_g", strict=False).with_columns(*_rates(grouped)).lazy()
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

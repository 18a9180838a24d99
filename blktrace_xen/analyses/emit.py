"""Turning a rule's rows into findings in FINDINGS_SCHEMA."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from blktrace_xen import schema
from blktrace_xen.analyses.registry import RULES

RING = list(schema.RING_KEY)


def emit(
    rows: pl.LazyFrame,
    rule_id: str,
    *,
    message: pl.Expr,
    evidence: Sequence[str | pl.Expr],
    severity: pl.Expr | None = None,
) -> pl.LazyFrame:
    """Findings of ``rule_id`` from ``rows``.

    ``rows`` may hold any of the FINDINGS_SCHEMA columns (missing ones become
    null; ``ns_end`` defaults to ``ns``); ``evidence`` columns are encoded into
    the JSON ``evidence`` object; ``severity`` overrides the rule's default per
    row.
    """
    sev = RULES[rule_id].severity
    names = rows.collect_schema().names()
    ev = [pl.col(e) if isinstance(e, str) else e for e in evidence]
    out = rows.with_columns(
        pl.lit(rule_id).alias("rule"),
        (pl.lit(sev) if severity is None else severity).cast(schema.Severity).alias("severity"),
        message.alias("message"),
        pl.struct(ev).struct.json_encode().alias("evidence")
        if ev
        else pl.lit("{}").alias("evidence"),
        pl.lit(1.0).alias("confidence"),
    )
    if "ns_end" not in names and "ns" in names:
        out = out.with_columns(pl.col("ns").alias("ns_end"))
    cols = []
    for name, dtype in schema.FINDINGS_SCHEMA.items():
        if name in out.collect_schema().names():
            cols.append(pl.col(name).cast(dtype))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return out.select(cols)


def ring_label() -> pl.Expr:
    """``d<domid>/<vdev>/q<queue>``, the ring as messages name it."""
    return pl.format("d{}/{}/q{}", "domid", "vdev", "queue")


def ms(col: str | pl.Expr) -> pl.Expr:
    """Nanoseconds as milliseconds with 3 decimals, for messages."""
    c = pl.col(col) if isinstance(col, str) else col
    return (c.cast(pl.Float64) / 1e6).round(3)


def nr_ents(streams_rings: pl.DataFrame, snapshots: pl.DataFrame, default: int) -> pl.LazyFrame:
    """Entries per ring: from ``rings``, else from ``snapshots``, else ``default``.

    Returns one row per ring known to either table; callers left-join and
    fill the null with ``default``.
    """
    known = pl.concat(
        [
            streams_rings.lazy().select(*RING, pl.col("nr_ents").cast(pl.Int64)),
            snapshots.lazy().group_by(RING).agg(pl.col("nr_ents").max().cast(pl.Int64)),
        ]
    )
    return known.group_by(RING).agg(pl.col("nr_ents").drop_nulls().first().fill_null(default))


def u32_ahead(a: str | pl.Expr, b: str | pl.Expr) -> pl.Expr:
    """``(a - b) mod 2**32`` as Int64: how far ring index ``a`` is ahead of ``b``."""
    ea = pl.col(a) if isinstance(a, str) else a
    eb = pl.col(b) if isinstance(b, str) else b
    return (ea.cast(pl.Int64) - eb.cast(pl.Int64)) & 0xFFFFFFFF


HALF = 1 << 31


def episodes(rows: pl.LazyFrame, flag: str, keys: Sequence[str]) -> pl.LazyFrame:
    """Runs of consecutive rows (per ``keys``, in row order) where ``flag`` holds.

    Adds ``run`` (a counter that changes where ``flag`` flips) and keeps only
    the flagged rows; callers group by ``[*keys, "run"]``.
    """
    part: list[pl.Expr] | list[str] = [ring_key()] if list(keys) == RING else list(keys)
    return rows.with_columns(
        (pl.col(flag) != pl.col(flag).shift(1).over(part))
        .fill_null(True)
        .cum_sum()
        .over(part)
        .alias("run")
    ).filter(pl.col(flag))


def ring_key() -> pl.Expr:
    """The ring as one u64 (domid:16 | vdev:32 | queue:16): one hash column instead of three."""
    return (
        pl.col("domid").cast(pl.UInt64) * (1 << 48)
        + pl.col("vdev").cast(pl.UInt64) * (1 << 16)
        + pl.col("queue").cast(pl.UInt64)
    )

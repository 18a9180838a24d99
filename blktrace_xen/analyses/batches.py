"""Batches of rings: run a per-ring pass on a few rings at a time, so its frames stay bounded.

Every value these passes compute belongs to one ring (as-of joins and windows
keyed by ring, groups that include the ring key), so running them on a group
of rings gives exactly that group's rows, and a ring is never split.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from blktrace_xen.analyses.emit import ring_key

# Rows of one frame in one batch (a ring with more rows makes a batch alone).
# Read at call time, so a check can make the batches small.
BATCH_EVENTS = 1 << 21


def ring_batches(frames: Sequence[pl.DataFrame]) -> list[pl.Series] | None:
    """Ring keys (see :func:`ring_key`) in groups of at most BATCH_EVENTS rows of any one frame.

    None when every frame fits one batch: the caller then runs its pass once
    on everything, without filtering.
    """
    if max((f.height for f in frames), default=0) <= BATCH_EVENTS:
        return None
    counts = (
        pl.concat(
            [
                f.lazy().select(ring_key().alias("ring_key"), pl.lit(i).alias("frame"))
                for i, f in enumerate(frames)
            ]
        )
        .group_by("ring_key", "frame")
        .len()
        .group_by("ring_key")
        .agg(pl.col("len").max())
        .sort("ring_key", nulls_last=True)
        .collect()
    )
    batches: list[pl.Series] = []
    keys: list[int | None] = []
    rows = 0
    for key, n in counts.iter_rows():
        if keys and rows + n > BATCH_EVENTS:
            batches.append(pl.Series("ring_key", keys, pl.UInt64))
            keys, rows = [], 0
        keys.append(key)
        rows += n
    batches.append(pl.Series("ring_key", keys, pl.UInt64))
    return batches


def in_batch(only: pl.Series) -> pl.Expr:
    """True for the rows of the rings in ``only`` (a null ring key matches a null)."""
    return ring_key().is_in(only.implode(), nulls_equal=True)

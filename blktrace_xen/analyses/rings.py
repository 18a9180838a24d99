"""Per-ring as-of questions over time-ordered frames, answered with sorted NumPy arrays.

The rules ask, for every request, how many responses of its ring came
before it (queue depth) or which one came last (the ring indices). Polars
answers with windows over the ring key and as-of joins ``by`` it, which hash
and scatter every row several times; at 10 M rows that cost seconds of CPU
per question. Here the rows get a dense integer code per group (a ring, or
a ring session), one stable radix sort by that code keeps each group's rows
in time order, and one ``searchsorted`` over a composite (group, ns) key
answers every row at once.

The callers keep their polars formulation for inputs these arrays cannot
represent exactly (a null ``ns`` or ring key, see :func:`usable`): those
semantics (nulls never match an as-of join, null keys form their own
window) are theirs to keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from blktrace_xen.analyses.emit import RING

I64 = npt.NDArray[np.int64]
Codes = npt.NDArray[np.integer[Any]]

# (group code, ns) packed into one int64 when it fits: below this no sum overflows.
_COMPOSITE_LIMIT = 1 << 62
# Up to this many groups, one search per group (no packed keys to build); read at
# call time, so a check can send small inputs through the packed search.
LOOP_GROUPS = 4096


# Rows per piece of work: small temporaries are reused by the allocator, while
# every 10 M-row temporary is fresh memory (on a VM, page faults cost more than the math).
CHUNK_ROWS = 1 << 20

# Read at call time: a check turns it off to run the callers' polars formulation.
ENABLED = True


def usable(frames: Sequence[pl.DataFrame], columns: Sequence[str]) -> bool:
    """True if these arrays can answer for ``frames``: no null in any of ``columns``.

    Otherwise the caller keeps its polars path.
    """
    return ENABLED and not any(f[c].null_count() for f in frames for c in columns)


def ring_keys(frame: pl.DataFrame) -> npt.NDArray[np.uint64]:
    """:func:`ring_key` of every row as a NumPy array (no nulls: see :func:`usable`).

    Built in place from the three columns: polars would keep the memory of its
    intermediate u64 columns (about 3 x 8 bytes a row) after returning them.
    """
    key = frame[RING[0]].to_numpy().astype(np.uint64)
    key <<= np.uint64(48)
    part = frame[RING[1]].to_numpy().astype(np.uint64)
    part <<= np.uint64(16)
    key |= part
    del part
    key |= frame[RING[2]].to_numpy().astype(np.uint64)
    return key


def dense_codes(
    keys: Sequence[npt.NDArray[Any]],
) -> tuple[list[Codes], npt.NDArray[Any]]:
    """Codes 0..K-1 of the values in ``keys`` (consistent across arrays) and the K sorted values.

    Codes follow the order of the values. The unique values come from polars
    (hashed, parallel) rather than ``np.unique`` (a sort, ~10x slower at 10 M).
    Codes are uint16 when K allows, so :class:`Grouped` sorts them by radix.
    """
    parts = [pl.Series(k).unique() for k in keys if len(k)]
    if parts:
        uniq = pl.concat(parts).unique().sort().to_numpy()
    else:
        uniq = np.empty(0, dtype=keys[0].dtype if keys else np.int64)
    dtype = np.uint16 if len(uniq) <= 1 << 16 else np.uint32
    codes: list[Codes] = []
    for k in keys:
        code: Codes = np.empty(len(k), dtype=dtype)
        # In slices: a whole-array search would hold an int64 position per row.
        for lo in range(0, len(k), CHUNK_ROWS):
            code[lo : lo + CHUNK_ROWS] = np.searchsorted(uniq, k[lo : lo + CHUNK_ROWS])
        codes.append(code)
    return codes, uniq


@dataclass(frozen=True, slots=True)
class Grouped:
    """One frame's rows grouped by code, each group in the frame's (time) order.

    ``order``: row numbers of the frame in that order; ``codes``: their codes;
    ``starts[c]`` .. ``starts[c + 1]``: the positions of group ``c``.
    """

    order: npt.NDArray[np.intp]
    codes: Codes
    starts: I64
    in_order: bool = False  # ``order`` is 0, 1, 2, ...: the frame was grouped already

    @classmethod
    def of(cls, codes: Codes, ngroups: int) -> Grouped:
        # A stable sort keeps time order within a group; on uint16 NumPy sorts by radix.
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=ngroups)
        starts = np.zeros(ngroups + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        # The sorted codes written in sequence, not gathered through ``order``.
        return cls(order, np.repeat(np.arange(ngroups, dtype=codes.dtype), counts), starts)

    def rows(self, g0: int, g1: int) -> slice:
        """The positions of groups ``g0`` .. ``g1 - 1``."""
        return slice(int(self.starts[g0]), int(self.starts[g1]))

    def rank(self) -> I64:
        """0-based position of each row within its group (in grouped order)."""
        return np.arange(len(self.codes), dtype=np.int64) - self.starts[self.codes]


@dataclass(frozen=True, slots=True)
class RingGroups:
    """Requests and responses grouped by ring (codes shared by both), and the ring keys."""

    req: Grouped
    rsp: Grouped
    uniq: npt.NDArray[np.uint64]

    @classmethod
    def of(cls, req: pl.DataFrame, rsp: pl.DataFrame) -> RingGroups:
        """Of time-ordered frames with no null ring key (see :func:`usable`)."""
        (cq, cs), uniq = dense_codes([ring_keys(req), ring_keys(rsp)])
        q = Grouped.of(cq, len(uniq))
        del cq
        return cls(q, Grouped.of(cs, len(uniq)), uniq)

    def codes_of(self, keys: npt.NDArray[np.uint64]) -> Codes | None:
        """The codes of these ring keys, or None if one is not among ``uniq``."""
        if not len(self.uniq):
            return None if len(keys) else np.empty(0, dtype=self.req.codes.dtype)
        at = np.searchsorted(self.uniq, keys).clip(max=len(self.uniq) - 1)
        if not (self.uniq[at] == keys).all():
            return None
        codes: Codes = at.astype(self.req.codes.dtype)
        return codes


def group_keys(keys: Sequence[I64]) -> tuple[list[Grouped], I64]:
    """A :class:`Grouped` of each array of int64 ``keys``, with codes shared by all, and the keys.

    For a piece of a few rings (see :func:`chunks`): keys already in order (the
    common case, e.g. one session per ring) need neither a sort nor a count.
    """
    ordered = [bool(len(k) < 2 or (k[1:] >= k[:-1]).all()) for k in keys]
    firsts = [
        k[np.flatnonzero(np.diff(k, prepend=k[:1] - 1))] if ok else np.unique(k)
        for k, ok in zip(keys, ordered, strict=True)
    ]
    uniq = np.unique(np.concatenate(firsts)) if firsts else np.empty(0, np.int64)
    out = []
    for k, ok in zip(keys, ordered, strict=True):
        if ok:
            starts = np.append(np.searchsorted(k, uniq), len(k)).astype(np.int64)
            codes = np.repeat(np.arange(len(uniq)), np.diff(starts))
            out.append(Grouped(np.arange(len(k)), codes, starts, in_order=True))
        else:
            out.append(Grouped.of(np.searchsorted(uniq, k), len(uniq)))
    return out, uniq


def chunks(grouped: Sequence[Grouped]) -> list[tuple[int, int]]:
    """Ranges ``[g0, g1)`` of groups holding about CHUNK_ROWS rows of ``grouped`` together.

    A group is never split (a larger one makes a range alone).
    """
    ngroups = len(grouped[0].starts) - 1
    total = np.zeros(ngroups + 1, dtype=np.int64)
    for g in grouped:
        total += g.starts
    out: list[tuple[int, int]] = []
    g0 = 0
    while g0 < ngroups:
        g1 = int(np.searchsorted(total, total[g0] + CHUNK_ROWS, side="right")) - 1
        g1 = min(max(g1, g0 + 1), ngroups)
        out.append((g0, g1))
        g0 = g1
    return out


def count_before(a: Grouped, a_ns: I64, b: Grouped, b_ns: I64, *, inclusive: bool) -> I64:
    """For each row of ``a`` (grouped order): the rows of ``b`` in its group with ns < (<=) its ns.

    ``a_ns`` / ``b_ns`` are in grouped order and non-decreasing within a
    group. ``b.starts[code] + count - 1`` is then the last such row (the
    latest of equal timestamps, as polars' backward as-of join picks it),
    and a count of 0 means none.
    """
    side: Literal["left", "right"] = "right" if inclusive else "left"
    if not len(a_ns) or not len(b_ns):
        return np.zeros(len(a_ns), dtype=np.int64)
    low = min(int(a_ns.min()), int(b_ns.min()))
    span = max(int(a_ns.max()), int(b_ns.max())) - low + 1
    ngroups = len(a.starts) - 1
    if ngroups > LOOP_GROUPS and ngroups * span < _COMPOSITE_LIMIT:
        # One search over (group, ns) packed in an int64, both sides sorted by it.
        ka = a.codes.astype(np.int64) * span + (a_ns - low)
        kb = b.codes.astype(np.int64) * span + (b_ns - low)
        found: I64 = np.searchsorted(kb, ka, side=side).astype(np.int64)
        del ka, kb
        found -= b.starts[a.codes]
        return found
    # Few groups, or timestamps too far apart to pack: one search per group.
    out = np.zeros(len(a_ns), dtype=np.int64)
    for g in np.flatnonzero(np.diff(a.starts)):
        lo, hi = a.starts[g], a.starts[g + 1]
        blo, bhi = b.starts[g], b.starts[g + 1]
        out[lo:hi] = np.searchsorted(b_ns[blo:bhi], a_ns[lo:hi], side=side)
    return out


def ring_frame(keys: npt.NDArray[Any]) -> pl.DataFrame:
    """The ring columns (domid, vdev, queue) of packed :func:`ring_key` values."""
    k = pl.Series("k", keys, dtype=pl.UInt64)
    return pl.DataFrame(
        {
            RING[0]: (k // (1 << 48)).cast(pl.UInt16),
            RING[1]: ((k // (1 << 16)) % (1 << 32)).cast(pl.UInt32),
            RING[2]: (k % (1 << 16)).cast(pl.UInt16),
        }
    )


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Per group: rows, sum, max and the asked quantiles (polars' "nearest") of an int column."""

    count: I64
    total: npt.NDArray[np.float64]  # exact: every partial sum is below 2**53
    max: I64
    quantiles: list[I64]


def nearest_rank(count: I64, q: float) -> I64:
    """The 0-based rank polars' ``quantile(q, "nearest")`` takes among ``count`` sorted values.

    ``(count - 1) * q`` rounded half away from zero (checked against polars in
    tests/test_analyses_rings.py).
    """
    x = (count - 1) * q
    whole = np.trunc(x)
    rank: I64 = (whole + (x - whole >= 0.5)).astype(np.int64)
    return rank


def group_stats(
    groups: npt.NDArray[np.integer], ngroups: int, values: I64, quantiles: Sequence[float]
) -> GroupStats | None:
    """:class:`GroupStats` of ``values`` by dense ``groups`` (every group non-empty), or None.

    One sort of (group, value) packed in an int64 gives every group's values
    in order; quantiles are then picked by rank. None when the packing would
    overflow or a group's sum might not be exact in a float (the caller then
    asks polars), so a mean from ``total / count`` is polars' own.
    """
    if not len(values):
        return None
    low, high = int(values.min()), int(values.max())
    span = high - low + 1
    if ngroups * span >= _COMPOSITE_LIMIT or len(values) * max(abs(low), abs(high)) >= 1 << 53:
        return None
    packed = groups.astype(np.int64)
    packed *= span
    packed += values
    packed -= low
    packed.sort()
    count = np.bincount(groups, minlength=ngroups).astype(np.int64)
    if not count.all():
        return None
    starts = np.zeros(ngroups, dtype=np.int64)
    np.cumsum(count[:-1], out=starts[1:])
    code = np.arange(ngroups, dtype=np.int64) * span - low

    def at(pos: I64) -> I64:
        picked: I64 = packed[pos] - code
        return picked

    return GroupStats(
        count=count,
        total=np.bincount(groups, weights=values, minlength=ngroups).astype(np.float64, copy=False),
        max=at(starts + count - 1),
        quantiles=[at(starts + nearest_rank(count, q)) for q in quantiles],
    )

"""Finding the few rows whose key repeats among millions, without sorting or hashing them all.

A polars ``is_duplicated`` (or a sort) of 10 M keys costs 1-2 s; counting
hashed keys in a fixed table with ``numpy.bincount`` costs a few tens of
milliseconds. Hash collisions only add rows, so repeating the count with
other seeds on the survivors converges to a small superset of the repeated
keys: callers then run their exact logic on that superset.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_BITS = 24  # 16 M counters (128 MB of int64) per pass
_MULT = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93)


def _bucket(
    a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64], seed: int
) -> npt.NDArray[np.intp]:
    # In place where possible: on this VM fresh memory (first touch) costs more than the math.
    m1 = np.uint64(_MULT[seed % 4])
    m2 = np.uint64(_MULT[(seed + 1) % 4])
    h = a * m1
    t = b * m2
    h ^= t
    h ^= np.uint64(seed)
    np.right_shift(h, np.uint64(31), out=t)
    h ^= t
    h *= m2
    np.right_shift(h, np.uint64(64 - _BITS), out=h)
    return h.view(np.intp)


def maybe_repeated(
    a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64], *, max_passes: int = 8
) -> npt.NDArray[np.bool_]:
    """A mask over rows: True for every row whose ``(a[i], b[i])`` occurs more than once.

    It may also be True for some rows whose pair is unique (hash collisions
    that survived every pass); it is never False for a repeated pair.
    """
    keep = np.zeros(len(a), dtype=bool)
    rows: npt.NDArray[np.intp] | None = None  # None: every row (no gather on the first pass)
    for seed in range(max_passes):
        ka, kb = (a, b) if rows is None else (a[rows], b[rows])
        if ka.size < 2:
            return keep
        bucket = _bucket(ka, kb, seed)
        counts = np.bincount(bucket, minlength=1 << _BITS)
        survive = np.flatnonzero(counts[bucket] > 1)
        del bucket, counts
        before = ka.size
        rows = survive if rows is None else rows[survive]
        if rows.size > before * 0.9:  # only true repeats (or stubborn collisions) left
            break
    if rows is None:
        return np.ones(len(a), dtype=bool)
    keep[rows] = True
    return keep

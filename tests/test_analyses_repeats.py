"""maybe_repeated: a superset of the repeated (a, b) pairs, and exact where collisions are rare."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from blktrace_xen.analyses.repeats import maybe_repeated


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    frame = pl.DataFrame({"a": a, "b": b})
    return frame.select(pl.struct("a", "b").is_duplicated())["a"].to_numpy()


@settings(derandomize=True, max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**64 - 1)), max_size=60))
def test_every_repeated_pair_is_kept(pairs: list[tuple[int, int]]) -> None:
    a = np.array([p[0] for p in pairs], dtype=np.uint64)
    b = np.array([p[1] for p in pairs], dtype=np.uint64)
    # Force repeats: append a copy of the first half.
    half = len(pairs) // 2
    a, b = np.concatenate([a, a[:half]]), np.concatenate([b, b[:half]])
    keep = maybe_repeated(a, b)
    assert not (_exact(a, b) & ~keep).any()


def test_unique_pairs_are_dropped_among_many() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 64, 200_000).astype(np.uint64)
    b = rng.integers(0, 1 << 40, 200_000).astype(np.uint64)
    a[:10], b[:10] = a[10:20], b[10:20]  # ten repeated pairs
    keep = maybe_repeated(a, b)
    exact = _exact(a, b)
    assert exact.sum() == 20 and not (exact & ~keep).any()
    assert keep.sum() < 100  # 64-bit hashes of unique pairs almost never collide


def test_empty_and_single() -> None:
    empty = np.array([], dtype=np.uint64)
    assert maybe_repeated(empty, empty).shape == (0,)
    one = np.array([5], dtype=np.uint64)
    assert not maybe_repeated(one, one).any()


def test_one_ring_never_collides() -> None:
    """For one ``a`` (a ring), distinct ``b`` (sectors) hash apart: no extra rows within a ring."""
    b = np.arange(0, 1 << 22, dtype=np.uint64) * 8
    a = np.full(len(b), 281478366756864, dtype=np.uint64)
    assert not maybe_repeated(a, b).any()
    assert maybe_repeated(np.append(a, a[:1]), np.append(b, np.uint64(3))).sum() == 0
    assert maybe_repeated(np.append(a, a[:1]), np.append(b, b[:1])).sum() == 2

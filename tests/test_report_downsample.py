"""The report's reductions: bounded points, extremes kept, counts exact."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from blktrace_xen.report.downsample import envelope, log_histogram, percentile_buckets

SETTINGS = settings(derandomize=True, max_examples=60, deadline=None)


def test_envelope_small_group_is_returned_exactly() -> None:
    df = pl.DataFrame({"g": [1, 1, 2], "t": [0.0, 1.0, 0.5], "v": [3, 4, 5]})
    out = envelope(df, t="t", value="v", max_points=10, by=["g"])
    assert out.select("g", "t", "v").rows() == [(1, 0.0, 3), (1, 1.0, 4), (2, 0.5, 5)]
    assert out["exact"].all()


@SETTINGS
@given(
    values=st.lists(st.integers(-1000, 1000), min_size=1, max_size=400),
    max_points=st.integers(2, 50),
)
def test_envelope_bounds_points_and_keeps_extremes(values: list[int], max_points: int) -> None:
    t = np.cumsum(np.ones(len(values)))
    df = pl.DataFrame({"t": t, "v": values})
    out = envelope(df, t="t", value="v", max_points=max_points)
    if len(values) <= max_points:
        assert out.height == len(values)
    else:
        assert out.height <= max_points
    assert out["v"].max() == max(values)
    assert out["v"].min() == min(values)
    assert out["t"].is_sorted()
    # Every kept point is a real (t, v) pair of the input: nothing is invented.
    pairs = set(zip(t.tolist(), values, strict=True))
    assert set(out.select("t", "v").rows()) <= pairs


def test_envelope_reduces_only_the_big_group() -> None:
    big = pl.DataFrame({"g": [0] * 1000, "t": np.arange(1000.0), "v": np.arange(1000) % 7})
    small = pl.DataFrame({"g": [1] * 3, "t": [0.0, 1.0, 2.0], "v": [1, 2, 3]})
    out = envelope(pl.concat([big, small]), t="t", value="v", max_points=100, by=["g"])
    by_g = out.partition_by("g", as_dict=True)
    assert by_g[(0,)].height <= 100
    assert not by_g[(0,)]["exact"].any()
    assert by_g[(1,)]["v"].to_list() == [1, 2, 3]
    assert by_g[(1,)]["exact"].all()


def test_percentile_buckets_match_numpy() -> None:
    rng = np.random.default_rng(7)
    t = np.sort(rng.uniform(0, 10, 5000))
    v = rng.lognormal(3, 1, 5000)
    df = pl.DataFrame({"t": t, "v": v})
    out = percentile_buckets(df, t="t", value="v", t_min=0.0, t_max=10.0, n_buckets=5)
    assert out["n"].sum() == 5000
    first = v[t < 2.0]
    row = out.row(0, named=True)
    assert row["n"] == first.size
    assert row["p50"] == np.percentile(first, 50)
    assert abs(row["p99"] - np.percentile(first, 99)) < 1e-9 * row["p99"]
    assert row["max"] == first.max()
    assert row["t"] == 1.0  # centre of [0, 2)


def test_percentile_bucket_of_one_row_reports_it() -> None:
    df = pl.DataFrame({"t": [0.5], "v": [42.0]})
    out = percentile_buckets(df, t="t", value="v", t_min=0.0, t_max=1.0, n_buckets=4)
    assert out.select("n", "p50", "p99", "max").row(0) == (1, 42.0, 42.0, 42.0)


@SETTINGS
@given(
    values=st.lists(st.integers(0, 10**10), min_size=1, max_size=300),
    groups=st.integers(1, 3),
)
def test_log_histogram_counts_every_value_once(values: list[int], groups: int) -> None:
    df = pl.DataFrame({"g": [i % groups for i in range(len(values))], "v": values})
    hist = log_histogram(df, value="v", by=["g"], bins=20)
    per_group = dict(hist.group_by("g").agg(pl.col("count").sum()).iter_rows())
    expected = dict(df.group_by("g").len().iter_rows())
    assert per_group == expected
    assert (hist["hi"] > hist["lo"]).all()


def test_log_histogram_bins_are_shared_and_place_values() -> None:
    df = pl.DataFrame({"v": [10, 100, 1000, 10000]})
    hist = log_histogram(df, value="v", bins=3)
    assert hist["count"].to_list() == [1, 1, 2]
    assert hist["lo"][0] == 10.0


def test_log_histogram_of_nothing_is_empty() -> None:
    df = pl.DataFrame({"v": [None]}, schema={"v": pl.Int64})
    assert log_histogram(df, value="v").height == 0

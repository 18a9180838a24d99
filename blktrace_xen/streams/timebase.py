"""One time base for a xentrace dump and ring captures taken in the same dom0.

A trace's ``ns`` is xenalyze's: ``((tsc - t0_tsc) << 10) // cpu_qhz``. A ring
capture that read the TSC at each snapshot (PV dom0: the same clock) is put on
that base through its TSC; rows without a TSC (gaps, mutations, xenstore lines
without one) move by the median offset between capture time and TSC time
measured on the snapshots. Unlike xenalyze, a time before ``t0_tsc`` stays
negative instead of being clamped to 0: captures usually start before the
trace.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

DEFAULT_CPU_MHZ: Final = 2400.0

# columns holding times, per table; the first is the one the table's tsc belongs to
TIME_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "requests": ("ns", "consumed_ns"),
    "responses": ("ns", "consumed_ns"),
    "control": ("ns",),
    "snapshots": ("ns",),
    "gaps": ("ns", "prev_ns"),
    "mutations": ("ns", "prev_ns"),
    "lost": ("ns", "first_ns"),
    "grants": ("ns",),
    "io": ("req_ns", "rsp_ns"),
    "pairing": ("ns", "req_ns", "prev_ns"),
}


def cpu_qhz(cpu_mhz: float) -> int:
    """xenalyze's ``cpu_qhz``: hz parsed in single precision, then ``(hz << 10) // 1e9``."""
    hz = int(np.float32(np.float32(cpu_mhz) * np.float32(1_000_000)))
    return (hz << 10) // 1_000_000_000


def tsc_ns_expr(tsc: pl.Expr, t0_tsc: int, cpu_mhz: float) -> pl.Expr:
    """``ns`` of ``tsc`` on the base that puts ``t0_tsc`` at 0 (negative before it)."""
    qhz = cpu_qhz(cpu_mhz)
    delta = tsc.cast(pl.Int64) - pl.lit(t0_tsc, pl.Int64)
    # (delta << 10) // qhz with Python's floor semantics on both signs
    return (delta * 1024).floordiv(qhz)


def capture_offset(rows: pl.DataFrame, t0_tsc: int, cpu_mhz: float) -> int | None:
    """Median (TSC time - capture time) over ``rows`` (ns, tsc) with a TSC; None if none has one.

    The rows are a capture's snapshots, or an agent capture's requests, responses and
    control rows (their TSC interpolated from the agent's calibration, capture/clock.py).
    """
    with_tsc = rows.filter(pl.col("tsc").is_not_null())
    if with_tsc.height == 0:
        return None
    diff = with_tsc.select(
        (tsc_ns_expr(pl.col("tsc"), t0_tsc, cpu_mhz) - pl.col("ns")).median()
    ).item()
    return round(float(diff))


def to_trace_time(
    tables: dict[str, pl.DataFrame], *, t0_tsc: int, cpu_mhz: float, offset: int
) -> dict[str, pl.DataFrame]:
    """Every time column of ``tables`` moved onto the trace's base.

    The first time column of a row with a ``tsc`` is recomputed from it
    exactly; every other time moves by ``offset``.
    """
    out = {}
    for name, frame in tables.items():
        cols = [c for c in TIME_COLUMNS.get(name, ()) if c in frame.columns]
        if not cols or frame.height == 0:
            out[name] = frame
            continue
        exprs = []
        for i, col in enumerate(cols):
            shifted = pl.col(col) + offset
            if i == 0 and "tsc" in frame.columns:
                exact = tsc_ns_expr(pl.col("tsc"), t0_tsc, cpu_mhz)
                exprs.append(
                    pl.when(pl.col("tsc").is_not_null()).then(exact).otherwise(shifted).alias(col)
                )
            else:
                exprs.append(shifted.alias(col))
        out[name] = frame.with_columns(exprs)
    return out


def shift(tables: dict[str, pl.DataFrame], offset: int) -> dict[str, pl.DataFrame]:
    """Every time column of ``tables`` moved by ``offset`` ns (a trace onto an earlier t0)."""
    out = {}
    for name, frame in tables.items():
        cols = [c for c in TIME_COLUMNS.get(name, ()) if c in frame.columns]
        out[name] = frame.with_columns([pl.col(c) + offset for c in cols]) if cols else frame
    return out


__all__ = [
    "DEFAULT_CPU_MHZ",
    "TIME_COLUMNS",
    "capture_offset",
    "cpu_qhz",
    "shift",
    "to_trace_time",
    "tsc_ns_expr",
]

"""Merge per-CPU record streams into xenalyze's processing order, in bounded memory.

xenalyze (tools/xentrace/xenalyze.c, ``process_records``) keeps one cursor per
pCPU and repeatedly processes the cursor with the smallest ``order_tsc``:

* a record with a TSC sets ``order_tsc`` to it; a TRC_LOST_RECORDS record sets
  it to the loss's ``first_tsc`` and is processed a second time (internal
  LOST_RECORDS_END) at ``max(own tsc, order_tsc)``; a record without TSC keeps it;
* the cursor just processed moves down past cursors with a strictly smaller
  ``order_tsc`` only, so among equal values the most recently entered wins;
  newly activated pCPUs (``order_tsc`` 0) are inserted before equal ones.

Replacing each stream's keys by their running maximum does not change that
order (an element below its predecessor's key is taken at once), so the order
is a stable sort by key, except across CPUs with equal keys: there the runs are
ordered by when each run's predecessor was processed, latest first. Those tie
groups are rare on real traces and fixed one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from blktrace_xen.structs import xentrace as xt

U64 = npt.NDArray[np.uint64]
_ACTIVATION_BASE: Final = -(1 << 62)

# Columns carried per element through the merge.
COLUMNS: Final = (
    "tsc", "has_tsc", "event", "n_extra", "d0", "d1", "d2", "d3", "d4", "d5", "d6",
    "file_offset", "emit", "counts",
)  # fmt: skip


@dataclass(slots=True)
class CpuState:
    last_tsc: int = 0  # xenalyze p->last_tsc
    order: int = 0  # p->order_tsc
    key: int = 0  # running max of order
    last_pos: int = 0  # global output position of the latest processed element
    pending: dict[str, np.ndarray] = field(default_factory=dict)
    pending_key: U64 = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))


def _activation_row() -> dict[str, np.ndarray]:
    row: dict[str, np.ndarray] = {
        "tsc": np.zeros(1, np.uint64),
        "has_tsc": np.zeros(1, np.bool_),
        "event": np.full(1, xt.TRC_TRACE_CPU_CHANGE, np.uint32),
        "n_extra": np.full(1, 2, np.uint8),
        "file_offset": np.zeros(1, np.uint64),
        "emit": np.zeros(1, np.bool_),
        "counts": np.zeros(1, np.bool_),
        "order": np.zeros(1, np.uint64),
    }
    for i in range(xt.TRACE_EXTRA_MAX):
        row[f"d{i}"] = np.zeros(1, np.uint32)
    return row


def _ffill(values: U64, setter: npt.NDArray[np.bool_], carry: int) -> U64:
    """Forward-fill ``values`` from rows where ``setter`` is True; ``carry`` before the first."""
    idx = np.where(setter, np.arange(len(values)), -1)
    np.maximum.accumulate(idx, out=idx)
    filled = values[np.maximum(idx, 0)]
    return np.where(idx >= 0, filled, np.uint64(carry))


class Merger:
    """Feed per-CPU records (file order) to :meth:`add`; take merged elements with :meth:`take`."""

    def __init__(self, activation_order: list[int]) -> None:
        self.state: dict[int, CpuState] = {}
        self.activation = {cpu: i for i, cpu in enumerate(activation_order)}
        self.out_pos = 0

    def _cpu(self, cpu: int) -> CpuState:
        st = self.state.get(cpu)
        if st is None:
            st = self.state[cpu] = CpuState()
            idx = self.activation.setdefault(cpu, len(self.activation))
            # Insertion time of the cursor: later activations go first among equals.
            st.last_pos = _ACTIVATION_BASE + idx
            # The activating cpu-change record is processed (key 0) before any
            # record of the CPU; materialise it so tie-breaks see its position.
            st.pending = _activation_row()
            st.pending_key = np.zeros(1, dtype=np.uint64)
        return st

    def add(self, cpu: int, cols: dict[str, np.ndarray]) -> None:
        """Append one CPU's records (file order) of the current block."""
        st = self._cpu(cpu)
        has = cols["has_tsc"]
        tsc = cols["tsc"]
        event = cols["event"]
        n = len(tsc)
        lost = event == xt.TRC_LOST_RECORDS
        lost4 = lost & has & (cols["n_extra"] == xt.LOST_RECORDS_WORDS)
        first_tsc = cols["d2"].astype(np.uint64) | (cols["d3"].astype(np.uint64) << np.uint64(32))
        ri_tsc = _ffill(tsc, has, st.last_tsc)
        order_set = np.where(lost4, first_tsc, tsc)
        if lost.any():
            # LOST_RECORDS_END: processed right after the loss, at max(its tsc, order).
            order_before = _ffill(order_set, has, st.order)
            li = np.flatnonzero(lost)
            end_order = np.maximum(ri_tsc[li], order_before[li])
            at = li + 1
            cols = {k: np.insert(v, at, v[li]) for k, v in cols.items()}
            cols["emit"][at + np.arange(len(at))] = False
            ri_tsc = np.insert(ri_tsc, at, ri_tsc[li])
            order_set = np.insert(order_set, at, end_order)
            setter = np.insert(has, at, True)
            n = len(ri_tsc)
        else:
            setter = has
        order = _ffill(order_set, setter, st.order)
        key = np.maximum.accumulate(np.maximum(order, np.uint64(st.key)))
        cols["tsc"] = ri_tsc
        if n:
            st.last_tsc = int(ri_tsc[-1])
            st.order = int(order[-1])
            st.key = int(key[-1])
        cols["order"] = order
        if st.pending:
            st.pending = {k: np.concatenate([st.pending[k], cols[k]]) for k in cols}
            st.pending_key = np.concatenate([st.pending_key, key])
        else:
            st.pending = cols
            st.pending_key = key

    def horizon(self, live: set[int]) -> int | None:
        """Largest key safe to emit: min current key of CPUs with windows still to come."""
        keys = [self._cpu(c).key for c in live]
        return min(keys) if keys else None

    def take(self, limit: int | None) -> dict[str, np.ndarray] | None:
        """Merged elements with key < ``limit`` (all when None), in processing order."""
        parts: list[tuple[int, dict[str, np.ndarray], U64]] = []
        for cpu in sorted(self.state):
            st = self.state[cpu]
            if not len(st.pending_key):
                continue
            cut = len(st.pending_key) if limit is None else int(
                np.searchsorted(st.pending_key, np.uint64(limit), side="left")
            )  # fmt: skip
            if cut == 0:
                continue
            head = {k: v[:cut] for k, v in st.pending.items()}
            parts.append((cpu, head, st.pending_key[:cut]))
            st.pending = {k: v[cut:] for k, v in st.pending.items()}
            st.pending_key = st.pending_key[cut:]
        if not parts:
            return None
        cols = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
        key = np.concatenate([p[2] for p in parts])
        cpu_col = np.concatenate([np.full(len(p[2]), p[0], dtype=np.uint16) for p in parts])
        order = np.argsort(key, kind="stable")
        order = self._fix_ties(order, key, cpu_col, parts)
        total = len(order)
        # Update each CPU's latest output position (its last element in concatenation order).
        pos_of = np.empty(total, dtype=np.int64)
        pos_of[order] = np.arange(total)
        start = 0
        for cpu, _, k in parts:
            start += len(k)
            self.state[cpu].last_pos = self.out_pos + int(pos_of[start - 1])
        self.out_pos += total
        out = {k: v[order] for k, v in cols.items()}
        out["cpu"] = cpu_col[order]
        return out

    def _fix_ties(
        self,
        order: npt.NDArray[np.intp],
        key: U64,
        cpu_col: npt.NDArray[np.uint16],
        parts: list[tuple[int, dict[str, np.ndarray], U64]],
    ) -> npt.NDArray[np.intp]:
        sk = key[order]
        sc = cpu_col[order]
        clash = np.flatnonzero((sk[1:] == sk[:-1]) & (sc[1:] != sc[:-1]))
        if not clash.size:
            return order
        # Concatenation index of each CPU block's first element.
        block_start: dict[int, int] = {}
        start = 0
        for cpu, _, k in parts:
            block_start[cpu] = start
            start += len(k)
        pos_of = np.empty(len(order), dtype=np.int64)
        pos_of[order] = np.arange(len(order))
        bounds = np.flatnonzero(sk[1:] != sk[:-1]) + 1
        done_groups: set[int] = set()
        for i in clash.tolist():
            g = int(np.searchsorted(bounds, i, side="right"))
            if g in done_groups:
                continue
            done_groups.add(g)
            a = int(bounds[g - 1]) if g else 0
            b = int(bounds[g]) if g < len(bounds) else len(order)
            members = order[a:b]
            runs: list[tuple[int, npt.NDArray[np.intp]]] = []
            cpus = cpu_col[members]
            cut = np.flatnonzero(cpus[1:] != cpus[:-1]) + 1
            for run in np.split(members, cut):
                first = int(run[0])
                cpu = int(cpu_col[first])
                if first > block_start[cpu]:
                    pred = self.out_pos + int(pos_of[first - 1])
                else:
                    pred = self.state[cpu].last_pos
                runs.append((pred, run))
            runs.sort(key=lambda r: -r[0])
            new = np.concatenate([r[1] for r in runs])
            order[a:b] = new
            pos_of[new] = np.arange(a, b)
        return order

    def pending_count(self) -> int:
        return sum(len(st.pending_key) for st in self.state.values())


def xenalyze_cpu_qhz(cpu_mhz: float) -> int:
    """xenalyze's ``cpu_qhz`` for ``--cpu-hz=<cpu_mhz>M``.

    xenalyze parses the number with ``strtof`` and multiplies in single
    precision (``parse_cpu_hz``), then ``QHZ_FROM_HZ(hz) = (hz << 10) / 1e9``.
    """
    hz = int(np.float32(np.float32(cpu_mhz) * np.float32(1_000_000)))
    return (hz << 10) // 1_000_000_000


def tsc_to_ns(tsc: np.ndarray, first_tsc: int, cpu_mhz: float) -> npt.NDArray[np.int64]:
    """xenalyze's ``abs_cycles_to_time``: ``((tsc - first_tsc) << 10) // cpu_qhz``.

    0 at or before ``first_tsc``, as xenalyze prints it.
    """
    qhz = np.uint64(xenalyze_cpu_qhz(cpu_mhz))
    t = np.asarray(tsc, dtype=np.uint64)
    first = np.uint64(first_tsc)
    after = t > first
    delta = np.where(after, t - first, np.uint64(0))
    return ((delta << np.uint64(10)) // qhz).astype(np.int64)

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

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
_ACTIVATION_BASE: Final = -(1 << 62)
ACTIVATION_ROW: Final = -1  # ``src`` of the materialised activating cpu-change element


@dataclass(slots=True)
class Elements:
    """Processed elements (records, LOST_RECORDS_END copies, activations) by reference.

    The merge moves only these few arrays; a record's columns are gathered once,
    by ``src`` (a row id the caller assigns), after its place is known.
    """

    src: I64  # caller's row id; ACTIVATION_ROW for an activation
    key: U64  # running max of ``order``: the merge sorts on it
    tsc: U64  # xenalyze's ri->tsc: own TSC, else the CPU's last one
    order: U64  # p->order_tsc after the element
    emit: Bools  # a row of ``events`` (not a wrap filler, LOST_RECORDS_END or activation)
    counts: Bools  # processed as a record (first_tsc candidate)

    def __len__(self) -> int:
        return len(self.src)

    def cut(self, a: int, b: int | None) -> Elements:
        return Elements(*(getattr(self, f)[a:b] for f in _FIELDS))

    @staticmethod
    def concat(parts: list[Elements]) -> Elements:
        if len(parts) == 1:
            return parts[0]
        return Elements(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS: Final = ("src", "key", "tsc", "order", "emit", "counts")


def _activation() -> Elements:
    # The activating cpu-change record is processed (key 0) before any record of
    # the CPU; materialise it so tie-breaks see its position.
    z = np.zeros(1, np.uint64)
    f = np.zeros(1, np.bool_)
    return Elements(np.full(1, ACTIVATION_ROW, np.int64), z, z.copy(), z.copy(), f, f.copy())


@dataclass(slots=True)
class CpuState:
    last_tsc: int = 0  # xenalyze p->last_tsc
    order: int = 0  # p->order_tsc
    key: int = 0  # running max of order
    last_pos: int = 0  # global output position of the latest processed element
    pending: Elements = field(default_factory=_activation)


@dataclass(slots=True)
class Taken:
    """Elements of one take: ``elements[order]`` is processing order.

    Left unpermuted so the caller gathers only what it uses (the emitted rows).
    """

    elements: Elements
    cpu: npt.NDArray[np.uint16]
    order: npt.NDArray[np.intp]

    def emitted(self) -> npt.NDArray[np.intp]:
        """Indices into ``elements`` of the ``events`` rows, in processing order."""
        return self.order[self.elements.emit[self.order]]

    def first_tsc(self) -> int | None:
        """``order`` of the first processed record with a nonzero TSC (xenalyze's first TSC)."""
        el = self.elements
        cand = np.flatnonzero((el.counts & (el.tsc != 0))[self.order])
        return int(el.order[self.order[cand[0]]]) if cand.size else None


def _ffill_index(setter: Bools) -> I64:
    """Index of the latest row at or before each row where ``setter`` is True, else -1."""
    idx = np.where(setter, np.arange(len(setter)), -1)
    np.maximum.accumulate(idx, out=idx)
    return idx


def _ffill(values: U64, setter: Bools, carry: int) -> U64:
    """Forward-fill ``values`` from rows where ``setter`` is True; ``carry`` before the first."""
    idx = _ffill_index(setter)
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
        return st

    def add(
        self,
        cpu: int,
        rows: I64,
        has: Bools,
        tsc: U64,
        emit: Bools,
        *,
        lost: Bools | None = None,
        lost4: Bools | None = None,
        lost_first: U64 | None = None,
    ) -> None:
        """Append one CPU's records (file order) of the current block.

        ``rows`` are the caller's row ids; ``tsc`` is 0 where ``has`` is False.
        ``lost`` marks TRC_LOST_RECORDS records, ``lost4`` those that set
        order_tsc to the loss's ``first_tsc`` (4 words and a TSC), held in
        ``lost_first`` there.
        """
        st = self._cpu(cpu)
        n = len(rows)
        if n == 0:
            return
        counts = np.ones(n, dtype=np.bool_)
        if lost is not None and lost4 is not None and lost_first is not None:
            ri_tsc = _ffill(tsc, has, st.last_tsc)
            order_set = np.where(lost4, lost_first, tsc)
            # LOST_RECORDS_END: processed right after the loss, at max(its tsc, order).
            order_before = _ffill(order_set, has, st.order)
            li = np.flatnonzero(lost)
            end_order = np.maximum(ri_tsc[li], order_before[li])
            at = li + 1
            rows = np.insert(rows, at, rows[li])
            emit = np.insert(emit, at, False)
            counts = np.insert(counts, at, True)
            ri_tsc = np.insert(ri_tsc, at, ri_tsc[li])
            order_set = np.insert(order_set, at, end_order)
            setter = np.insert(has, at, True)
            order = _ffill(order_set, setter, st.order)
        else:
            idx = _ffill_index(has)
            seen = idx >= 0
            filled = tsc[np.maximum(idx, 0)]
            ri_tsc = np.where(seen, filled, np.uint64(st.last_tsc))
            order = (
                ri_tsc if st.order == st.last_tsc else np.where(seen, filled, np.uint64(st.order))
            )
        key = np.maximum.accumulate(np.maximum(order, np.uint64(st.key)))
        st.last_tsc = int(ri_tsc[-1])
        st.order = int(order[-1])
        st.key = int(key[-1])
        new = Elements(rows, key, ri_tsc, order, emit, counts)
        st.pending = Elements.concat([st.pending, new]) if len(st.pending) else new

    def horizon(self, live: set[int]) -> int | None:
        """Largest key safe to emit: min current key of CPUs with windows still to come."""
        keys = [self._cpu(c).key for c in live]
        return min(keys) if keys else None

    def pending_rows(self) -> I64:
        """Sorted distinct row ids still referenced by pending elements."""
        srcs = [st.pending.src for st in self.state.values() if len(st.pending)]
        if not srcs:
            return np.zeros(0, dtype=np.int64)
        rows: I64 = np.unique(np.concatenate(srcs))
        kept: I64 = rows[rows != ACTIVATION_ROW]
        return kept

    def renumber(self, rows: I64) -> None:
        """Number pending elements' rows 0.. in the order of ``rows`` (:meth:`pending_rows`)."""
        for st in self.state.values():
            src = st.pending.src
            if len(src):
                st.pending.src = np.where(
                    src == ACTIVATION_ROW, src, np.searchsorted(rows, src)
                ).astype(np.int64, copy=False)

    def take(self, limit: int | None) -> Taken | None:
        """Merged elements with key < ``limit`` (all when None), in processing order."""
        parts: list[tuple[int, Elements]] = []
        for cpu in sorted(self.state):
            st = self.state[cpu]
            n = len(st.pending)
            if not n:
                continue
            cut = n if limit is None else int(
                np.searchsorted(st.pending.key, np.uint64(limit), side="left")
            )  # fmt: skip
            if cut == 0:
                continue
            if cut == n:
                parts.append((cpu, st.pending))
                st.pending = st.pending.cut(n, None)
            else:
                parts.append((cpu, st.pending.cut(0, cut)))
                st.pending = st.pending.cut(cut, None)
        if not parts:
            return None
        el = Elements.concat([p[1] for p in parts])
        lengths = [len(p[1]) for p in parts]
        cpu_col = np.repeat(np.asarray([p[0] for p in parts], dtype=np.uint16), lengths)
        order = np.argsort(el.key, kind="stable")
        order = self._fix_ties(order, el.key, cpu_col, parts)
        total = len(order)
        # Each CPU's latest output position: where its last concatenated element went.
        ends = np.cumsum(lengths) - 1
        pos_of = np.empty(total, dtype=np.int64)
        pos_of[order] = np.arange(total)
        for (cpu, _), end in zip(parts, ends.tolist(), strict=True):
            self.state[cpu].last_pos = self.out_pos + int(pos_of[end])
        self.out_pos += total
        return Taken(el, cpu_col, order)

    def _fix_ties(
        self,
        order: npt.NDArray[np.intp],
        key: U64,
        cpu_col: npt.NDArray[np.uint16],
        parts: list[tuple[int, Elements]],
    ) -> npt.NDArray[np.intp]:
        if len(parts) == 1:
            return order
        sk = key[order]
        sc = cpu_col[order]
        clash = np.flatnonzero((sk[1:] == sk[:-1]) & (sc[1:] != sc[:-1]))
        if not clash.size:
            return order
        # Concatenation index of each CPU block's first element.
        block_start: dict[int, int] = {}
        start = 0
        for cpu, el in parts:
            block_start[cpu] = start
            start += len(el)
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
        return sum(len(st.pending) for st in self.state.values())


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

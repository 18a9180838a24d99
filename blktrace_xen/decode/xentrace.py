"""xentrace dump -> Polars ``events`` (schema.EVENTS_SCHEMA) in xenalyze's order, streaming.

Pipeline per block of whole windows (memory bounded by the block, not the file):
window headers (:mod:`xentrace_walk`) -> record chain and columns
(:mod:`xentrace_block`) -> per-CPU merge by TSC (:mod:`xentrace_merge`) -> ns.
Wrap fillers are dropped; TRC_LOST_RECORDS rows stay in ``events`` and are also
summarised in ``lost``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from blktrace_xen.decode.xentrace_block import decode_block
from blktrace_xen.decode.xentrace_count import Counts, count_block
from blktrace_xen.decode.xentrace_merge import Merger, tsc_to_ns, xenalyze_cpu_qhz
from blktrace_xen.decode.xentrace_walk import Windows, scan_windows
from blktrace_xen.errors import InputFileError, MalformedRecord
from blktrace_xen.structs import xentrace as xt

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "DEFAULT_CPU_MHZ",
    "IngestRun",
    "XentraceResult",
    "iter_xentrace_chunks",
    "read_xentrace",
    "summarize_xentrace",
    "tsc_to_ns",
    "xenalyze_cpu_qhz",
]

DEFAULT_CPU_MHZ: Final = 2400.0
_BYTES_PER_RECORD: Final = 20  # typical; sizes blocks from chunk_records
# Small blocks keep temporaries a few MB, so malloc recycles them instead of
# faulting in fresh pages (first-touch memory is slow, performance-notes §4).
_INFO_BLOCK_BYTES: Final = 8 << 20


@dataclass(frozen=True)
class XentraceResult:
    """A whole dump decoded: ``events`` in merged time order, ``lost`` and metadata."""

    events: pl.DataFrame
    lost: pl.DataFrame
    meta: dict[str, Any]
    warnings: list[str]


@dataclass
class IngestRun:
    """Progress of one decode, filled in as blocks are read."""

    path: str
    cpu_mhz: float
    cpu_mhz_default: bool
    size: int = 0
    windows: int = 0
    records: int = 0
    wraps: int = 0
    cpus: set[int] = field(default_factory=set)
    first_tsc: int | None = None
    last_tsc: int = 0
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, path: str | Path, cpu_mhz: float | None) -> IngestRun:
        """A run to pass as ``_run`` to :func:`iter_xentrace_chunks` to collect its metadata."""
        warnings: list[str] = []
        mhz, default = _cpu_mhz(cpu_mhz, warnings)
        return cls(str(path), mhz, default, warnings=warnings)

    def meta(self) -> dict[str, Any]:
        first = self.first_tsc or 0
        span = int(tsc_to_ns(np.array([self.last_tsc]), first, self.cpu_mhz)[0])
        return {
            "path": self.path,
            "format": "xentrace",
            "bytes": self.size,
            "windows": self.windows,
            "cpus": sorted(self.cpus),
            "records": self.records,
            "wrap_records": self.wraps,
            "first_tsc": first,
            "last_tsc": self.last_tsc,
            "span_ns": span,
            "cpu_mhz": self.cpu_mhz,
            "cpu_mhz_default": self.cpu_mhz_default,
            "cpu_qhz": xenalyze_cpu_qhz(self.cpu_mhz),
            "warnings": list(self.warnings),
        }


def _cpu_mhz(cpu_mhz: float | None, warnings: list[str]) -> tuple[float, bool]:
    if cpu_mhz is None:
        warnings.append(
            f"--cpu-mhz not given: using xenalyze's default {DEFAULT_CPU_MHZ:g} MHz "
            "(`xl info` prints the host's cpu_mhz)"
        )
        return DEFAULT_CPU_MHZ, True
    if not cpu_mhz > 0:
        raise InputFileError("--cpu-mhz", f"must be positive, got {cpu_mhz}")
    return float(cpu_mhz), False


class _FileSource:
    """The dump read with ``pread`` into one reused buffer.

    Not a memory map: mapped pages count in the process's RSS, which would then
    grow with the file; a reused buffer keeps memory at one block.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._buf = bytearray()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: slice, /) -> bytes:
        start, stop, _ = item.indices(self.size)
        return os.pread(self.fd, max(stop - start, 0), start)

    def words(self, start: int, end: int) -> npt.NDArray[np.uint32]:
        """u32 words of bytes [start, end), end rounded down; valid until the next call."""
        n = (end - start) // 4 * 4
        if len(self._buf) < n:
            self._buf = bytearray(n)
        view = memoryview(self._buf)[:n]
        got = os.preadv(self.fd, [view], start)
        if got != n:
            raise InputFileError(self.fd_path, f"short read at offset {start:#x}")
        return np.frombuffer(self._buf, dtype="<u4", count=n // 4)

    fd_path = ""


@contextmanager
def _open_source(path: str | Path) -> Iterator[_FileSource]:
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        raise InputFileError(p, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(p, "is a directory, expected a xentrace dump") from None
    except OSError as exc:
        raise InputFileError(p, f"cannot open: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise InputFileError(p, "is empty, expected a xentrace dump")
        if os.path.isdir(p):
            raise InputFileError(p, "is a directory, expected a xentrace dump")
        src = _FileSource(fd, size)
        src.fd_path = str(p)
        yield src
    finally:
        os.close(fd)


def _blocks(win: Windows, budget_bytes: int) -> Iterator[tuple[int, int]]:
    """[first, last) window index ranges of about ``budget_bytes`` each."""
    i = 0
    n = len(win.offset)
    while i < n:
        j = i
        used = 0
        while j < n and (j == i or used + win.size[j] + xt.CPU_CHANGE_SIZE <= budget_bytes):
            used += win.size[j] + xt.CPU_CHANGE_SIZE
            j += 1
        yield i, j
        i = j


def _first_epoch(cpus: list[int]) -> list[int]:
    """CPUs in the order xenalyze's start-up scan activates them (until a CPU repeats)."""
    seen: list[int] = []
    for c in cpus:
        if c in seen:
            break
        seen.append(c)
    return seen


def _events_frame(out: dict[str, np.ndarray], first_tsc: int, cpu_mhz: float) -> pl.DataFrame:
    import polars as pl

    from blktrace_xen.schema import EVENTS_SCHEMA

    emit = out["emit"]
    ev = out["event"][emit]
    tsc = out["tsc"][emit]
    cols: dict[str, Any] = {
        "cpu": out["cpu"][emit],
        "tsc": tsc,
        "has_tsc": out["has_tsc"][emit],
        "ns": tsc_to_ns(tsc, first_tsc, cpu_mhz),
        "event": ev,
        "class": ((ev >> 16) & 0xFFF).astype(np.uint16),
        "subclass": ((ev >> 12) & 0xF).astype(np.uint8),
        "minor": (ev & 0xFFF).astype(np.uint16),
        "n_extra": out["n_extra"][emit],
    }
    for i in range(xt.TRACE_EXTRA_MAX):
        cols[f"d{i}"] = out[f"d{i}"][emit]
    cols["file_offset"] = out["file_offset"][emit]
    return pl.DataFrame(cols, schema=EVENTS_SCHEMA)


def _iter_merged(
    path: str | Path, run: IngestRun, chunk_records: int
) -> Iterator[dict[str, np.ndarray]]:
    """Merged element batches (every processed element, incl. wraps and virtual ones)."""
    with _open_source(path) as src:
        run.size = len(src)
        win = scan_windows(src, path)
        if win.short_offset is not None:
            run.warnings.append(win.short_problem)
        run.windows = len(win.offset)
        if not win.offset:
            raise MalformedRecord(
                "xentrace", "no complete cpu-change window header", path=path, offset=0
            )
        last_window: dict[int, int] = {}
        for i, c in enumerate(win.cpu):
            last_window[c] = i
        # CPUs past xenalyze's start-up scan are activated in order of first
        # appearance, as if present from the start (documented approximation).
        merger = Merger(list(dict.fromkeys(win.cpu)))
        epoch = _first_epoch(win.cpu)
        late = [c for c in dict.fromkeys(win.cpu) if c not in epoch]
        if late:
            run.warnings.append(
                f"cpu {late} first appear(s) after the first round of windows; their first "
                "records may be ordered differently from xenalyze"
            )
        budget = max(chunk_records * _BYTES_PER_RECORD, 1 << 16)
        n_win = len(win.offset)
        short_is_last = win.short_offset is not None
        for a, b in _blocks(win, budget):
            start = win.offset[a]
            end = min(win.offset[b - 1] + xt.CPU_CHANGE_SIZE + win.size[b - 1], len(src))
            block = decode_block(
                src.words(start, end),
                start,
                win.offset[a:b],
                win.cpu[a:b],
                win.size[a:b],
                path=path,
            )
            if block.truncated_at is not None:
                if not (short_is_last and b == n_win):
                    raise MalformedRecord(
                        "xentrace",
                        "record runs past the end of its window",
                        path=path,
                        offset=block.truncated_at,
                    )
                run.warnings.append(
                    f"incomplete last record at offset {block.truncated_at:#x} ignored"
                )
            event = block.header & np.uint32(xt.TRC_EVENT_MASK)
            is_wrap = event == xt.TRC_TRACE_WRAP_BUFFER
            run.wraps += int(is_wrap.sum())
            run.records += int((~is_wrap).sum())
            if block.has_tsc.any():
                run.last_tsc = max(run.last_tsc, int(block.tsc[block.has_tsc].max()))
            cols_all: dict[str, np.ndarray] = {
                "tsc": block.tsc,
                "has_tsc": block.has_tsc,
                "event": event,
                "n_extra": block.n_extra,
                "file_offset": block.file_offset,
                "emit": ~is_wrap,
                "counts": np.ones(len(event), dtype=np.bool_),
            }
            for i in range(xt.TRACE_EXTRA_MAX):
                cols_all[f"d{i}"] = block.data[i]
            present = np.unique(block.cpu)
            single = len(present) == 1
            for cpu in present.tolist():
                run.cpus.add(cpu)
                if single:
                    merger.add(cpu, dict(cols_all))
                else:
                    sel = np.flatnonzero(block.cpu == cpu)
                    merger.add(cpu, {k: v[sel] for k, v in cols_all.items()})
            live = {c for c, last in last_window.items() if last >= b}
            limit = merger.horizon(live) if live else None
            if live and limit is None:
                continue
            out = merger.take(limit)
            if out is not None:
                yield out
        rest = merger.take(None)
        if rest is not None:
            yield rest


def _note_first_tsc(run: IngestRun, out: dict[str, np.ndarray]) -> None:
    if run.first_tsc is not None:
        return
    cand = np.flatnonzero(out["counts"] & (out["tsc"] != 0))
    if cand.size:
        run.first_tsc = int(out["order"][cand[0]])


def iter_xentrace_chunks(
    path: str | Path,
    *,
    cpu_mhz: float | None = None,
    chunk_records: int = 1 << 20,
    run: IngestRun | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield ``events`` frames in merged order; memory is bounded by ``chunk_records``.

    ``ns`` uses xenalyze's first TSC (the first processed record with a TSC).
    Pass ``run`` (:meth:`IngestRun.start`) to read the metadata afterwards.
    """
    state = run if run is not None else IngestRun.start(path, cpu_mhz)
    for out in _iter_merged(path, state, chunk_records):
        _note_first_tsc(state, out)
        frame = _events_frame(out, state.first_tsc or 0, state.cpu_mhz)
        if frame.height:
            yield frame


def lost_frame(events: pl.DataFrame, first_tsc: int, cpu_mhz: float) -> pl.DataFrame:
    """``lost`` rows (schema.LOST_SCHEMA) from the TRC_LOST_RECORDS rows of ``events``."""
    import polars as pl

    from blktrace_xen.schema import LOST_SCHEMA

    rows = events.filter(
        (pl.col("event") == xt.TRC_LOST_RECORDS) & (pl.col("n_extra") == xt.LOST_RECORDS_WORDS)
    )
    first = rows["d2"].to_numpy().astype(np.uint64) | (
        rows["d3"].to_numpy().astype(np.uint64) << np.uint64(32)
    )
    d1 = rows["d1"].to_numpy()
    return pl.DataFrame(
        {
            "cpu": rows["cpu"],
            "ns": rows["ns"],
            "first_ns": tsc_to_ns(first, first_tsc, cpu_mhz),
            "count": rows["d0"],
            "domid": (d1 & 0xFFFF).astype(np.uint16),
            "vcpu": (d1 >> 16).astype(np.uint16),
        },
        schema=LOST_SCHEMA,
    )


def read_xentrace(path: str | Path, *, cpu_mhz: float | None = None) -> XentraceResult:
    """Decode a whole xentrace dump.

    Raises InputFileError for a missing/empty file and DecodeError for bytes that
    are not a xentrace dump (naming the offset and what was expected). A short
    last window is a warning; its complete records are kept.
    """
    import polars as pl

    from blktrace_xen.schema import EVENTS_SCHEMA

    run = IngestRun.start(path, cpu_mhz)
    mhz = run.cpu_mhz
    frames = list(iter_xentrace_chunks(path, run=run))
    events = pl.concat(frames, rechunk=False) if frames else pl.DataFrame(schema=EVENTS_SCHEMA)
    meta = run.meta()
    lost = lost_frame(events, meta["first_tsc"], mhz)
    meta["lost_records"] = int(lost["count"].sum()) if lost.height else 0
    meta["lost_events"] = lost.height
    return XentraceResult(events=events, lost=lost, meta=meta, warnings=list(run.warnings))


def summarize_xentrace(path: str | Path, *, cpu_mhz: float | None = None) -> dict[str, Any]:
    """What ``blktrace-xen info`` prints: a full decode without the merge or a frame.

    Returns meta plus ``per_class`` (class name -> records), ``per_cpu`` and ``lost``.
    NumPy only, so the command starts fast.
    """
    warnings: list[str] = []
    mhz, default = _cpu_mhz(cpu_mhz, warnings)
    run = IngestRun(str(path), mhz, default, warnings=warnings)
    counts = Counts()
    with _open_source(path) as src:
        run.size = len(src)
        win = scan_windows(src, path)
        if win.short_offset is not None:
            run.warnings.append(win.short_problem)
        run.windows = len(win.offset)
        if not win.offset:
            raise MalformedRecord(
                "xentrace", "no complete cpu-change window header", path=path, offset=0
            )
        n_win = len(win.offset)
        for a, b in _blocks(win, _INFO_BLOCK_BYTES):
            start = win.offset[a]
            end = min(win.offset[b - 1] + xt.CPU_CHANGE_SIZE + win.size[b - 1], len(src))
            counts.truncated_at = None
            count_block(
                counts, src.words(start, end), start, win_offsets=win.offset[a:b],
                win_cpus=win.cpu[a:b], win_sizes=win.size[a:b], path=path,
            )  # fmt: skip
            if counts.truncated_at is not None:
                if not (win.short_offset is not None and b == n_win):
                    raise MalformedRecord(
                        "xentrace", "record runs past the end of its window",
                        path=path, offset=counts.truncated_at,
                    )  # fmt: skip
                run.warnings.append(
                    f"incomplete last record at offset {counts.truncated_at:#x} ignored"
                )
    run.records = counts.records
    run.wraps = counts.wraps
    run.cpus.update(counts.per_cpu)
    run.first_tsc = counts.first_tsc
    run.last_tsc = counts.last_tsc
    meta = run.meta()
    meta["per_class"] = {
        xt.CLASS_NAMES.get(c, f"{c:#05x}"): k for c, k in counts.per_class().items()
    }
    meta["per_cpu"] = {str(c): counts.per_cpu[c] for c in sorted(counts.per_cpu)}
    meta["lost"] = counts.lost
    meta["lost_records"] = sum(x["count"] for x in counts.lost)
    return meta

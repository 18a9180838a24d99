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

from blktrace_xen.decode.xentrace_block import Block, data_columns, decode_block
from blktrace_xen.decode.xentrace_count import Counts, count_block
from blktrace_xen.decode.xentrace_merge import Merger, Taken, tsc_to_ns, xenalyze_cpu_qhz
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
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]
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


def _scan(src: _FileSource, path: str | Path, run: IngestRun) -> Windows:
    """The dump's window headers; a short last window is a warning, none at all an error."""
    run.size = len(src)
    win = scan_windows(src, path)
    if win.short_offset is not None:
        run.warnings.append(win.short_problem)
    run.windows = len(win.offset)
    if not win.offset:
        raise MalformedRecord(
            "xentrace", "no complete cpu-change window header", path=path, offset=0
        )
    return win


def _block_words(src: _FileSource, win: Windows, a: int, b: int) -> tuple[int, _U32]:
    """The file byte where windows ``a..b-1`` start, and their words (to the file's end at most)."""
    start = win.offset[a]
    end = min(win.offset[b - 1] + xt.CPU_CHANGE_SIZE + win.size[b - 1], len(src))
    return start, src.words(start, end)


def _truncated(run: IngestRun, win: Windows, b: int, at: int, path: str | Path) -> None:
    """A record at byte ``at`` cut by the end of windows ``..b-1``: only the end of a
    short last window may cut one (a killed xentrace), and that is a warning."""
    if not (win.short_offset is not None and b == len(win.offset)):
        raise MalformedRecord(
            "xentrace", "record runs past the end of its window", path=path, offset=at
        )
    run.warnings.append(f"incomplete last record at offset {at:#x} ignored")


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


_CARRY_COLUMNS: Final = (
    "event", "has_tsc", "n_extra", "file_offset", *(f"d{i}" for i in range(xt.TRACE_EXTRA_MAX))
)  # fmt: skip
_CARRY_DTYPES: Final = {
    "event": np.uint32, "has_tsc": np.bool_, "n_extra": np.uint8, "file_offset": np.uint64,
    **{f"d{i}": np.uint32 for i in range(xt.TRACE_EXTRA_MAX)},
}  # fmt: skip


def _block_rows(
    words: npt.NDArray[np.uint32], block: Block, event: npt.NDArray[np.uint32], idx: _I64
) -> dict[str, np.ndarray]:
    """Columns of the block's records ``idx``, each gathered once (data words from ``words``)."""
    # np.take: several times cheaper than fancy indexing for these gathers.
    has = np.take(block.has_tsc, idx)
    n_extra = np.take(block.n_extra, idx)
    # Extra words follow the header and, when present, the two TSC words.
    first = np.take(block.rec_pos, idx) + 1 + (has.view(np.uint8).astype(np.int64) << 1)
    cols: dict[str, np.ndarray] = {
        "event": np.take(event, idx),
        "has_tsc": has,
        "n_extra": n_extra,
        "file_offset": np.take(block.file_offset, idx),
    }
    for i, col in enumerate(data_columns(words, first, n_extra)):
        cols[f"d{i}"] = col
    return cols


def _rows(
    rows: _I64,
    carry: dict[str, np.ndarray],
    words: npt.NDArray[np.uint32],
    block: Block | None,
    event: npt.NDArray[np.uint32] | None,
) -> dict[str, np.ndarray]:
    """Columns of row ids ``rows``: ids below the carry's length are carried rows, the
    rest are the block's records (id - carry length)."""
    if not len(rows):
        return {k: np.zeros(0, dtype=_CARRY_DTYPES[k]) for k in _CARRY_COLUMNS}
    n_carry = len(carry["event"]) if carry else 0
    in_carry = rows < n_carry
    n_in = int(np.count_nonzero(in_carry))
    if n_in == 0 and block is not None and event is not None:
        return _block_rows(words, block, event, rows - n_carry)
    if n_in == len(rows):
        return {k: carry[k][rows] for k in _CARRY_COLUMNS}
    assert block is not None and event is not None
    # Few rows are carried: gather every row from the block (carried ones from
    # a stand-in record) and patch the carried ones, instead of a masked
    # scatter of every column.
    at = np.flatnonzero(in_carry)
    idx = rows - n_carry
    idx[at] = 0
    out = _block_rows(words, block, event, idx)
    from_carry = rows[at]
    for k in _CARRY_COLUMNS:
        out[k][at] = carry[k][from_carry]
    return out


def _frame(
    taken: Taken,
    run: IngestRun,
    *,
    carry: dict[str, np.ndarray],
    words: npt.NDArray[np.uint32],
    block: Block | None,
    event: npt.NDArray[np.uint32] | None,
) -> pl.DataFrame:
    import polars as pl

    from blktrace_xen.schema import EVENTS_SCHEMA

    if run.first_tsc is None:
        run.first_tsc = taken.first_tsc()
    sel = taken.emitted()
    tsc = taken.elements.tsc[sel]
    rows = _rows(taken.elements.src[sel], carry, words, block, event)
    ev = rows["event"]
    cols: dict[str, Any] = {
        "cpu": taken.cpu[sel],
        "tsc": tsc,
        "has_tsc": rows["has_tsc"],
        "ns": tsc_to_ns(tsc, run.first_tsc or 0, run.cpu_mhz),
        "event": ev,
        "class": ((ev >> 16) & 0xFFF).astype(np.uint16),
        "subclass": ((ev >> 12) & 0xF).astype(np.uint8),
        "minor": (ev & 0xFFF).astype(np.uint16),
        "n_extra": rows["n_extra"],
    }
    for i in range(xt.TRACE_EXTRA_MAX):
        cols[f"d{i}"] = rows[f"d{i}"]
    cols["file_offset"] = rows["file_offset"]
    return pl.DataFrame(cols, schema=EVENTS_SCHEMA)


def _cpu_groups(cpu: npt.NDArray[np.uint16]) -> list[tuple[int, _I64]]:
    """Each CPU present and its records' indices, in file order (CPUs ascending)."""
    n = len(cpu)
    if n == 0:
        return []
    if cpu[0] == cpu[-1] and not (cpu != cpu[0]).any():
        return [(int(cpu[0]), np.arange(n, dtype=np.int64))]
    # A stable sort of u16 is a radix sort: one pass, and file order kept per CPU.
    perm = np.argsort(cpu, kind="stable")
    counts = np.bincount(cpu)
    present = np.flatnonzero(counts)
    ends = np.cumsum(counts[present])
    return [
        (int(c), perm[e - int(counts[c]) : e].astype(np.int64, copy=False))
        for c, e in zip(present.tolist(), ends.tolist(), strict=True)
    ]


def _add_block(
    merger: Merger,
    run: IngestRun,
    *,
    words: npt.NDArray[np.uint32],
    block: Block,
    event: npt.NDArray[np.uint32],
    n_carry: int,
) -> None:
    is_wrap = event == xt.TRC_TRACE_WRAP_BUFFER
    n_wrap = int(np.count_nonzero(is_wrap))
    run.wraps += n_wrap
    run.records += len(event) - n_wrap
    if block.has_tsc.any():
        run.last_tsc = max(run.last_tsc, int(block.tsc.max()))
    for cpu, sel in _cpu_groups(block.cpu):
        run.cpus.add(cpu)
        has = block.has_tsc[sel]
        ev = event[sel]
        lost = ev == xt.TRC_LOST_RECORDS
        lost4 = lost_first = None
        if lost.any():
            lost4 = lost & has & (block.n_extra[sel] == xt.LOST_RECORDS_WORDS)
            at = np.flatnonzero(lost4)
            # first_tsc is the loss's 3rd and 4th extra words (after its own TSC).
            w = block.rec_pos[sel[at]] + 3 + 2
            lost_first = np.zeros(len(sel), dtype=np.uint64)
            lost_first[at] = words[w].astype(np.uint64) | (
                words[w + 1].astype(np.uint64) << np.uint64(32)
            )
        else:
            lost = None
        merger.add(
            cpu, sel + n_carry, has, block.tsc[sel], ~is_wrap[sel],
            lost=lost, lost4=lost4, lost_first=lost_first,
        )  # fmt: skip


def _iter_frames(path: str | Path, run: IngestRun, chunk_records: int) -> Iterator[pl.DataFrame]:
    """``events`` frames in merged order, one per block whose records can be placed."""
    with _open_source(path) as src:
        win = _scan(src, path, run)
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
        # A block holds at least one window, so a tiny chunk_records means one
        # window per block (tests use it to cross every block boundary).
        budget = max(chunk_records * _BYTES_PER_RECORD, 1)
        # Rows of pending elements, gathered before the read buffer is reused.
        carry: dict[str, np.ndarray] = {}
        words = np.zeros(0, dtype=np.uint32)
        for a, b in _blocks(win, budget):
            start, words = _block_words(src, win, a, b)
            block = decode_block(
                words, start, win.offset[a:b], win.cpu[a:b], win.size[a:b],
                path=path, fields=False,
            )  # fmt: skip
            if block.truncated_at is not None:
                _truncated(run, win, b, block.truncated_at, path)
            event = block.header & np.uint32(xt.TRC_EVENT_MASK)
            _add_block(
                merger, run, words=words, block=block, event=event,
                n_carry=len(carry["event"]) if carry else 0,
            )  # fmt: skip
            live = {c for c, last in last_window.items() if last >= b}
            limit = merger.horizon(live) if live else None
            if not (live and limit is None):
                taken = merger.take(limit)
                if taken is not None:
                    frame = _frame(taken, run, carry=carry, words=words, block=block, event=event)
                    if frame.height:
                        yield frame
            keep = merger.pending_rows()
            carry = _rows(keep, carry, words, block, event) if len(keep) else {}
            merger.renumber(keep)
        rest = merger.take(None)
        if rest is not None:
            frame = _frame(rest, run, carry=carry, words=words, block=None, event=None)
            if frame.height:
                yield frame


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
    yield from _iter_frames(path, state, chunk_records)


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
    run = IngestRun.start(path, cpu_mhz)
    counts = Counts()
    with _open_source(path) as src:
        win = _scan(src, path, run)
        for a, b in _blocks(win, _INFO_BLOCK_BYTES):
            start, words = _block_words(src, win, a, b)
            counts.truncated_at = None
            count_block(
                counts, words, start, win_offsets=win.offset[a:b],
                win_cpus=win.cpu[a:b], win_sizes=win.size[a:b], path=path,
            )  # fmt: skip
            if counts.truncated_at is not None:
                _truncated(run, win, b, counts.truncated_at, path)
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

"""xentrace framing: window headers, and the record chain found without a per-record loop.

A dump is one chain of ``t_rec`` records (the 12-byte window headers are
``t_rec`` too); a record's length follows from its first word alone, so the
chain is a sequential dependency. :func:`walk_chain` breaks it with
"speculative lanes" (docs/performance-notes.md §2): walk every lane of
``LANE_WORDS`` words from its own start at once, then walk exactly from each
lane's true entry until it meets its speculative path. xentrace records
resynchronise within a few records, so the exact walks are short; data built to
never resynchronise falls back to a plain sequential walk, still exact.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from blktrace_xen.errors import MalformedRecord
from blktrace_xen.structs import xentrace as xt

LANE_WORDS: Final = 512
_MAX_ROUNDS: Final = 6


def _derive_len_lut() -> npt.NDArray[np.int64]:
    """Record length in words for each top nibble of the header, read from the declaration."""
    lut = np.zeros(16, dtype=np.int64)
    for nibble in range(16):
        probe = struct.pack("<I", nibble << xt.TRC_HD_EXTRA_SHIFT) + bytes(40)
        stream = io.BytesIO(probe)
        xt.t_rec.parse_stream(stream)
        lut[nibble] = stream.tell() // 4
    return lut


LEN_LUT: Final = _derive_len_lut()


@dataclass(slots=True)
class Windows:
    """The window headers of a dump, in file order (offsets in bytes)."""

    offset: list[int] = field(default_factory=list)
    cpu: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    # Set when the last window (or its header) runs past the end of the file.
    short_offset: int | None = None
    short_problem: str = ""


class ByteSource(Protocol):
    """What :func:`scan_windows` reads: a length and byte slices (bytes, or a file reader)."""

    def __len__(self) -> int: ...
    def __getitem__(self, item: slice, /) -> bytes: ...


def _bad_header(
    path: str | Path | None, offset: int, index: int, field: str, problem: str
) -> MalformedRecord:
    return MalformedRecord(
        "xentrace", problem, path=path, offset=offset, record_index=index, field=field
    )


def scan_windows(buf: ByteSource | bytes, path: str | Path | None = None) -> Windows:
    """Follow the cpu-change headers from offset 0; garbage raises MalformedRecord.

    A header or window cut short by the end of the file is not an error (a killed
    xentrace leaves one): it is reported in ``short_offset`` and kept.
    """
    size = len(buf)
    out = Windows()
    off = 0
    unpack = struct.Struct("<IiI").unpack
    while off < size:
        if size - off < xt.CPU_CHANGE_SIZE:
            out.short_offset = off
            out.short_problem = (
                f"{size - off} trailing bytes at offset {off:#x} are less than a "
                f"{xt.CPU_CHANGE_SIZE}-byte cpu-change header; ignored"
            )
            break
        header, cpu, wsize = unpack(buf[off : off + xt.CPU_CHANGE_SIZE])
        if header != xt.CPU_CHANGE_HEADER:
            raise _bad_header(
                path, off, len(out.offset), "header",
                f"expected a TRC_TRACE_CPU_CHANGE window header {xt.CPU_CHANGE_HEADER:#010x}, "
                f"found {header:#010x}",
            )  # fmt: skip
        if not 0 <= cpu < xt.MAX_CPUS:
            raise _bad_header(
                path, off, len(out.offset), "cpu",
                f"window header names cpu {cpu}, expected 0..{xt.MAX_CPUS - 1}",
            )  # fmt: skip
        if wsize % 4:
            raise _bad_header(
                path, off, len(out.offset), "window_size",
                f"window_size {wsize} is not a multiple of 4 (records are whole u32 words)",
            )  # fmt: skip
        out.offset.append(off)
        out.cpu.append(cpu)
        out.size.append(wsize)
        end = off + xt.CPU_CHANGE_SIZE + wsize
        if end > size:
            out.short_offset = off
            out.short_problem = (
                f"last window at offset {off:#x} claims {wsize} bytes but the file ends "
                f"after {size - off - xt.CPU_CHANGE_SIZE}; its complete records are kept"
            )
            break
        off = end
    return out


def window_overrun(
    words: npt.NDArray[np.uint32],
    prev: int,
    base_offset: int,
    bad: int,
    *,
    win_offsets: list[int],
    win_cpus: list[int],
    win_sizes: list[int],
    path: str | Path | None,
) -> MalformedRecord:
    """The error for window ``bad``'s header lying inside a record: the record at word
    ``prev`` of ``words`` (file byte ``base_offset`` on) overruns window ``bad - 1``."""
    length = int(LEN_LUT[int(words[prev]) >> 28]) * 4
    w = bad - 1
    return MalformedRecord(
        "xentrace",
        f"record of {length} bytes runs past the end of the window of cpu {win_cpus[w]} "
        f"at {win_offsets[w]:#x} (window ends at {win_offsets[bad]:#x}, "
        f"window_size {win_sizes[w]})",
        path=path,
        offset=base_offset + prev * 4,
        field="window_size",
    )


def walk_sequential(words: npt.NDArray[np.uint32], start: int) -> npt.NDArray[np.int64]:
    """Chain positions from ``start`` with one step per record (fallback and reference)."""
    n = len(words)
    lut = LEN_LUT.tolist()
    seq = words.tolist() if n < 1 << 16 else None
    out: list[int] = []
    p = start
    if seq is not None:
        while p < n:
            out.append(p)
            p += lut[seq[p] >> 28]
    else:
        while p < n:
            out.append(p)
            p += lut[int(words[p]) >> 28]
    return np.asarray(out, dtype=np.int64)


def walk_chain(
    words: npt.NDArray[np.uint32], start: int = 0, lane_words: int = LANE_WORDS
) -> npt.NDArray[np.int64]:
    """Word index of every record header on the chain from ``start`` that begins before the end.

    Exact: equal to :func:`walk_sequential` for every input (a property test checks it).
    """
    return np.flatnonzero(chain_mask(words, start, lane_words))


def chain_mask(
    words: npt.NDArray[np.uint32], start: int = 0, lane_words: int = LANE_WORDS
) -> npt.NDArray[np.bool_]:
    """True at the word index of every record header on the chain from ``start``.

    Each step reads the header words it needs instead of precomputing a length
    for every word: a whole-array pass costs more than the ~1 in 5 words that
    are headers.
    """
    n = len(words)
    mark = np.zeros(n, dtype=np.bool_)
    if n - start <= 4 * lane_words:
        mark[walk_sequential(words, start)] = True
        return mark
    lut = LEN_LUT
    starts = np.arange(start, n, lane_words, dtype=np.int64)
    k = len(starts)
    ends = np.minimum(starts + lane_words, n)

    # 1. Speculative walk of every lane from its own first word, marking as it goes.
    spec_exit = np.empty(k, dtype=np.int64)
    lanes = np.arange(k, dtype=np.int64)
    lane_end = ends
    cur = starts.copy()
    while cur.size:
        mark[cur] = True
        nxt = cur + lut[words[cur] >> 28]
        inside = nxt < lane_end
        if not inside.all():
            done = ~inside
            spec_exit[lanes[done]] = nxt[done]
            lanes = lanes[inside]
            lane_end = lane_end[inside]
            nxt = nxt[inside]
        cur = nxt

    # 2. Exact walk of each lane from its entry until it meets the speculative
    #    path ("converges"); a lane that does not converge changes the entry of
    #    the next one, which is then walked again.
    conv = np.empty(k, dtype=np.int64)  # first position kept from the speculative path
    exit_ = np.empty(k, dtype=np.int64)
    entry = np.empty(k, dtype=np.int64)
    entry[0] = start
    entry[1:] = spec_exit[:-1]
    exact_lane: list[npt.NDArray[np.int64]] = []
    exact_pos: list[npt.NDArray[np.int64]] = []
    exact_round: list[int] = []
    lane_round = np.zeros(k, dtype=np.int64)
    todo = np.arange(k, dtype=np.int64)
    rounds = 0
    while todo.size:
        rounds += 1
        if rounds > _MAX_ROUNDS:
            break
        lane_round[todo] = rounds
        p = entry[todo]
        ln = todo
        while ln.size:
            inl = p < ends[ln]
            hit = np.zeros(ln.size, dtype=np.bool_)
            hit[inl] = mark[p[inl]]
            if hit.any():
                conv[ln[hit]] = p[hit]
                exit_[ln[hit]] = spec_exit[ln[hit]]
            out = ~inl
            if out.any():
                conv[ln[out]] = ends[ln[out]]
                exit_[ln[out]] = p[out]
            walk = inl & ~hit
            ln = ln[walk]
            p = p[walk]
            if ln.size:
                exact_lane.append(ln)
                exact_pos.append(p)
                exact_round.append(rounds)
                p = p + lut[words[p] >> 28]
        wrong = np.flatnonzero(entry[1:] != exit_[:-1]) + 1
        entry[wrong] = exit_[wrong - 1]
        todo = wrong

    # 3. Replace each lane's speculative prefix (before it converges) by its
    #    exact one. The two are disjoint: an exact position on the speculative
    #    path would have been its convergence point.
    ln = np.flatnonzero(conv > starts)
    p = starts[ln]
    while ln.size:
        before = p < conv[ln]
        ln = ln[before]
        p = p[before]
        mark[p] = False
        p = p + lut[words[p] >> 28]
    for ln, pos, rnd in zip(exact_lane, exact_pos, exact_round, strict=True):
        mark[pos[lane_round[ln] == rnd]] = True
    if todo.size:
        # Data built so lanes never meet: lanes before the first unsettled one
        # are exact; walk the rest one record at a time.
        cut = int(starts[todo[0]])
        mark[cut:] = False
        mark[walk_sequential(words, int(entry[todo[0]]))] = True
    return mark

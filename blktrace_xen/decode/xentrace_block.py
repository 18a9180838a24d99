"""One block of whole windows -> record columns in file order (vectorised, no per-record Python)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from blktrace_xen.decode.xentrace_walk import LEN_LUT, walk_chain, window_overrun
from blktrace_xen.structs import xentrace as xt

U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]
# d0..d2 are read for every record (xentrace records average ~2 extra words).
_DENSE_COLUMNS: Final = 3


@dataclass(slots=True)
class Block:
    """Records of a block in file order (window headers removed, wrap fillers kept)."""

    cpu: npt.NDArray[np.uint16]
    has_tsc: npt.NDArray[np.bool_]
    tsc: npt.NDArray[np.uint64]  # own TSC, 0 where has_tsc is False
    header: U32  # the raw first word
    n_extra: npt.NDArray[np.uint8]
    data: list[U32]  # d0..d6, 0 beyond n_extra
    file_offset: npt.NDArray[np.uint64]
    truncated_at: int | None  # byte offset of an incomplete last record, if any
    rec_pos: I64  # word index of each record's header in ``words``
    win_records: I64  # records per window of the block (after a truncated one is dropped)


def decode_block(
    words: U32,
    base_offset: int,
    win_offsets: list[int],
    win_cpus: list[int],
    win_sizes: list[int],
    *,
    path: str | Path | None,
    fields: bool = True,
) -> Block:
    """Decode the windows that ``words`` (starting at file byte ``base_offset``) holds.

    The first word is a window header. A window whose records do not end exactly
    at its end raises MalformedRecord naming the record that overruns it.
    """
    pos = walk_chain(words, 0)
    n_words = len(words)
    hdr_words = (np.asarray(win_offsets, dtype=np.int64) - base_offset) // 4
    where = np.searchsorted(pos, hdr_words)
    where_c = np.minimum(where, max(len(pos) - 1, 0))
    on_chain = (where < len(pos)) & (pos[where_c] == hdr_words) if len(pos) else where < 0
    if not on_chain.all():
        bad = int(np.flatnonzero(~on_chain)[0])
        prev = int(pos[int(where[bad]) - 1])
        raise window_overrun(
            words, prev, base_offset, bad,
            win_offsets=win_offsets, win_cpus=win_cpus, win_sizes=win_sizes, path=path,
        )  # fmt: skip
    is_hdr = np.zeros(len(pos), dtype=np.bool_)
    is_hdr[where] = True
    rec_pos = pos[~is_hdr]
    hdr = words[rec_pos]
    top = (hdr >> 28).astype(np.int64)
    rec_len = LEN_LUT[top]
    truncated_at = None
    if len(rec_pos) and rec_pos[-1] + rec_len[-1] > n_words:
        truncated_at = base_offset + int(rec_pos[-1]) * 4
        rec_pos, hdr, top = rec_pos[:-1], hdr[:-1], top[:-1]
    # Each window's records sit between its header and the next one on the chain,
    # so per-record CPUs are a repeat of the window CPUs (no per-record search).
    # The last window may also end inside its size claim: records past EOF do not exist.
    win_records = np.diff(where, append=len(pos)) - 1
    if truncated_at is not None:
        win_records[-1] -= 1
    cpu = np.repeat(np.asarray(win_cpus, dtype=np.uint16), win_records)
    has = top >= 8
    n_extra = (top & 7).astype(np.uint8)
    file_offset = (rec_pos * 4 + base_offset).astype(np.uint64)
    if not fields:
        tsc = _tsc(words, rec_pos, has)
        return Block(
            cpu, has, tsc, hdr, n_extra, [], file_offset, truncated_at, rec_pos, win_records
        )
    tsc = _tsc(words, rec_pos, has)
    first = rec_pos + 1 + 2 * has
    data = []
    last = n_words - 1
    for i in range(xt.TRACE_EXTRA_MAX):
        present = n_extra > i
        idx = np.minimum(first + i, last)
        col = words[idx]
        data.append(np.where(present, col, np.uint32(0)).astype(np.uint32, copy=False))
    return Block(cpu, has, tsc, hdr, n_extra, data, file_offset, truncated_at, rec_pos, win_records)


def _tsc(words: U32, rec_pos: I64, has: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint64]:
    # Only records with a TSC are read: both words are inside the block for them.
    at = rec_pos[has] + 1
    tsc = np.zeros(len(rec_pos), dtype=np.uint64)
    tsc[has] = words[at].astype(np.uint64) | (words[at + 1].astype(np.uint64) << np.uint64(32))
    return tsc


def data_columns(words: U32, first: I64, n_extra: npt.NDArray[np.uint8]) -> list[U32]:
    """d0..d6 of records whose extra words start at ``first``; 0 beyond ``n_extra``.

    Most records have a first few words: those columns are a straight ``take``
    (clipped at the block's end, then zeroed where absent), far cheaper than a
    masked gather and scatter. The mostly-empty high columns read only the
    records that have them.
    """
    out: list[U32] = []
    n = len(first)
    sel = np.flatnonzero(n_extra > _DENSE_COLUMNS - 1)
    for i in range(xt.TRACE_EXTRA_MAX):
        if i < _DENSE_COLUMNS:
            col = np.take(words, first + i, mode="clip")
            np.multiply(col, n_extra > i, out=col)
        else:
            sel = np.take(sel, np.flatnonzero(np.take(n_extra, sel) > i))
            col = np.zeros(n, dtype=np.uint32)
            col[sel] = np.take(words, np.take(first, sel) + i)
        out.append(col)
    return out

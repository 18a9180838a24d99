"""What ``info`` needs from one block of whole windows: counts, TSC range, losses.

No per-record CPU, no columns and no merge: ``info`` is timed against
xenalyze's whole run from a cold process, so a block costs one chain walk, one
header gather, one bincount and one TSC gather.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from blktrace_xen.decode.xentrace_walk import LEN_LUT, chain_mask, window_overrun
from blktrace_xen.structs import xentrace as xt

_HD_TSC: Final = np.uint32(1 << 31)
_CLASS_GEN: Final = xt.TRC_GEN >> 16 & 0xFFF  # lost, wrap and cpu-change records
_HIGH_BINS: Final = 1 << 16  # every value of a header's top 16 bits


@dataclass(slots=True)
class Counts:
    """Running totals over the blocks of one dump."""

    # Records per value of the header's top 16 bits (flags, n_extra and class);
    # window headers and wrap fillers included, taken out by :meth:`per_class`.
    high: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(_HIGH_BINS, dtype=np.int64)
    )
    windows: int = 0
    wraps: int = 0
    per_cpu: dict[int, int] = field(default_factory=dict)
    first_tsc: int | None = None
    last_tsc: int = 0
    lost: list[dict[str, int]] = field(default_factory=list)
    truncated_at: int | None = None

    @property
    def records(self) -> int:
        return int(self.high.sum()) - self.windows - self.wraps

    def per_class(self) -> dict[int, int]:
        """Records per class (12 bits), window headers and wrap fillers excluded."""
        by_class = self.high.reshape(16, 4096).sum(axis=0)
        by_class[_CLASS_GEN] -= self.windows + self.wraps
        return {c: int(by_class[c]) for c in np.flatnonzero(by_class).tolist()}


def count_block(
    counts: Counts,
    words: npt.NDArray[np.uint32],
    base_offset: int,
    *,
    win_offsets: list[int],
    win_cpus: list[int],
    win_sizes: list[int],
    path: str | Path | None,
) -> None:
    """Add the windows ``words`` (file byte ``base_offset`` on) holds to ``counts``.

    Raises MalformedRecord, as :func:`~.xentrace_block.decode_block` does, for a
    record that runs past the end of its window. A record cut by the end of
    ``words`` is left out and reported in ``counts.truncated_at``.
    """
    n = len(words)
    mark = chain_mask(words, 0)
    hdr_words = (np.asarray(win_offsets, dtype=np.int64) - base_offset) // 4
    on_chain = mark[hdr_words]
    if not on_chain.all():
        bad = int(np.flatnonzero(~on_chain)[0])
        prev = int(np.flatnonzero(mark[: hdr_words[bad]])[-1])
        raise window_overrun(
            words, prev, base_offset, bad,
            win_offsets=win_offsets, win_cpus=win_cpus, win_sizes=win_sizes, path=path,
        )  # fmt: skip
    pos = np.flatnonzero(mark)
    last = int(pos[-1])
    if last + int(LEN_LUT[int(words[last]) >> 28]) > n:
        counts.truncated_at = base_offset + last * 4
        pos = pos[:-1]
    hdr = words[pos]
    # The top 16 bits, read in place (little-endian: the odd u16 of each word).
    counts.high += np.bincount(hdr.view(np.uint16)[1::2], minlength=_HIGH_BINS)
    counts.windows += len(win_offsets)

    # Records per window: chain positions between consecutive window headers.
    first = np.searchsorted(pos, hdr_words)
    per_window = np.diff(np.append(first, len(pos))) - 1
    gen = np.flatnonzero((hdr.view(np.uint16)[1::2] & 0xFFF) == _CLASS_GEN)
    gen_event = hdr[gen] & np.uint32(xt.TRC_EVENT_MASK)
    wrap = gen[gen_event == xt.TRC_TRACE_WRAP_BUFFER]
    if wrap.size:
        counts.wraps += len(wrap)
        np.subtract.at(per_window, np.searchsorted(first, wrap, side="right") - 1, 1)
    for cpu, k in zip(win_cpus, per_window.tolist(), strict=True):
        if k:
            counts.per_cpu[cpu] = counts.per_cpu.get(cpu, 0) + k

    has = pos[hdr >= _HD_TSC]
    if has.size:
        # Extremes of hi << 32 | lo from the high words first: two u32 gathers of
        # a few rows instead of building a u64 for every record.
        hi = words[2:][has]
        for pick, keep in ((np.min, "first"), (np.max, "last")):
            top = int(pick(hi))
            lo = int(pick(words[1:][has[hi == top]]))
            value = top << 32 | lo
            if keep == "first":
                counts.first_tsc = (
                    value if counts.first_tsc is None else min(counts.first_tsc, value)
                )
            else:
                counts.last_tsc = max(counts.last_tsc, value)

    lost_hdr = xt.TRC_LOST_RECORDS | (xt.LOST_RECORDS_WORDS << xt.TRC_HD_EXTRA_SHIFT) | 1 << 31
    for p in gen[hdr[gen] == lost_hdr].tolist():
        at = int(pos[p])
        d = words[at + 3 : at + 7].tolist()
        counts.lost.append(
            {
                "offset": base_offset + at * 4,
                "count": d[0],
                "domid": d[1] & 0xFFFF,
                "vcpu": d[1] >> 16,
                "first_tsc": d[2] | d[3] << 32,
            }
        )

"""Byte-exact xentrace writer: records in, a dump as Xen's ``xentrace`` writes it.

Records are grouped per pCPU into cpu-change windows, the way ``xentrace``
drains each pCPU's buffer on every poll: a window holds up to
``window_records`` consecutive records of one CPU, and windows of different
CPUs are interleaved in poll order (poll 0: CPU 0, CPU 1, ...; poll 1: ...).
Bytes come from the construct declarations in ``structs/xentrace.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from blktrace_xen.errors import ModelUsageError
from blktrace_xen.structs import xentrace as xt


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One ``t_rec`` as a pCPU's trace buffer holds it.

    ``tsc`` None writes a record without TSC (``cycles_included`` = 0), as
    TRC_GUEST records are. ``extra`` holds 0..7 u32 words.
    """

    cpu: int
    tsc: int | None
    event: int
    extra: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.cpu < xt.MAX_CPUS:
            raise ModelUsageError(f"TraceRecord cpu {self.cpu} outside 0..{xt.MAX_CPUS - 1}")
        if not 0 <= self.event <= xt.TRC_EVENT_MASK:
            raise ModelUsageError(f"TraceRecord event {self.event:#x} does not fit 28 bits")
        if len(self.extra) > xt.TRACE_EXTRA_MAX:
            raise ModelUsageError(f"TraceRecord has {len(self.extra)} extra words, at most 7")
        if self.tsc is not None and not 0 <= self.tsc < 1 << 64:
            raise ModelUsageError(f"TraceRecord tsc {self.tsc} does not fit 64 bits")
        if any(not 0 <= w < 1 << 32 for w in self.extra):
            raise ModelUsageError("TraceRecord extra words must be u32")


def encode_record(rec: TraceRecord) -> bytes:
    """The bytes of one ``t_rec`` (4..40 bytes)."""
    header = {
        "cycles_included": rec.tsc is not None,
        "extra_u32": len(rec.extra),
        "event": rec.event,
    }
    out: bytes = xt.t_rec.build({"header": header, "cycles": rec.tsc, "extra": list(rec.extra)})
    return out


def encode_cpu_change(cpu: int, window_size: int) -> bytes:
    """The 12-byte window header."""
    out: bytes = xt.cpu_change_record.build({"cpu": cpu, "window_size": window_size})
    return out


def lost_records_record(  # noqa: PLR0917 - mirrors the C struct's field order
    cpu: int, tsc: int, count: int, domid: int, vcpu: int, first_tsc: int
) -> TraceRecord:
    """A TRC_LOST_RECORDS record as Xen's ``insert_lost_records`` writes it."""
    payload = xt.lost_records_payload.build(
        {"lost_records": count, "did": domid, "vid": vcpu, "first_tsc": first_tsc}
    )
    words = struct.unpack("<4I", payload)
    return TraceRecord(cpu=cpu, tsc=tsc, event=xt.TRC_LOST_RECORDS, extra=words)


def wrap_buffer_record(cpu: int, size: int, tsc: int | None = None) -> TraceRecord:
    """A TRC_TRACE_WRAP_BUFFER filler of ``size`` bytes (stale payload written as 0).

    Xen adds a TSC only when the filler is larger than 32 bytes (``insert_wrap_record``).
    """
    if size % 4 or not 4 <= size <= 40:
        raise ModelUsageError(f"wrap filler size {size} must be a multiple of 4 in 4..40")
    with_tsc = size > 32
    n = (size - 4 - (8 if with_tsc else 0)) // 4
    return TraceRecord(
        cpu=cpu, tsc=(tsc or 0) if with_tsc else None, event=xt.TRC_TRACE_WRAP_BUFFER,
        extra=(0,) * n,
    )  # fmt: skip


def _windows(records: Iterable[TraceRecord], window_records: int) -> Iterable[tuple[int, bytes]]:
    """(cpu, payload) per window, in the order xentrace would write them."""
    pending: dict[int, list[bytes]] = {}
    order: list[int] = []
    for rec in records:
        buf = pending.get(rec.cpu)
        if buf is None:
            buf = pending[rec.cpu] = []
            order.append(rec.cpu)
        buf.append(encode_record(rec))
        if len(buf) >= window_records:
            # A full buffer forces a poll: drain every CPU in index order, like
            # xentrace's loop over pCPUs 0..N-1.
            for cpu in sorted(order):
                if pending[cpu]:
                    yield cpu, b"".join(pending[cpu])
                    pending[cpu] = []
    for cpu in sorted(order):
        if pending[cpu]:
            yield cpu, b"".join(pending[cpu])


def write_xentrace(
    dest: str | Path | BinaryIO,
    records: Iterable[TraceRecord],
    *,
    window_records: int = 256,
) -> int:
    """Write ``records`` as a xentrace dump; return the number of bytes written.

    Records of each CPU keep their given order. Records are buffered per CPU;
    when one CPU has ``window_records`` pending, every CPU with pending records
    gets a window (in CPU order), as one xentrace poll would write them.
    """
    if window_records < 1:
        raise ModelUsageError("window_records must be at least 1")
    if isinstance(dest, (str, Path)):
        with open(dest, "wb") as fh:
            return write_xentrace(fh, records, window_records=window_records)
    written = 0
    for cpu, payload in _windows(records, window_records):
        written += dest.write(encode_cpu_change(cpu, len(payload)))
        written += dest.write(payload)
    return written

"""Reference xentrace decoder: construct parse and a literal port of xenalyze's cursor merge.

Slow (a Python object per record) and only for tests and small files: it is
what the fast path in :mod:`blktrace_xen.decode.xentrace` is checked against.
The merge follows ``process_records`` / ``record_order_bubble`` of
tools/xentrace/xenalyze.c step by step instead of the sort the fast path uses.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from construct import ConstructError

from blktrace_xen.decode.xentrace_merge import xenalyze_cpu_qhz
from blktrace_xen.errors import MalformedRecord
from blktrace_xen.structs import xentrace as xt


@dataclass(frozen=True, slots=True)
class RefEvent:
    cpu: int
    tsc: int
    has_tsc: bool
    ns: int
    event: int
    extra: tuple[int, ...]
    file_offset: int


@dataclass(slots=True)
class _Raw:
    cpu: int
    has_tsc: bool
    tsc: int
    event: int
    extra: tuple[int, ...]
    file_offset: int


def parse_windows(data: bytes) -> list[tuple[int, list[_Raw]]]:
    """(cpu, records) per window via construct; a short last window keeps its whole records."""
    out: list[tuple[int, list[_Raw]]] = []
    off = 0
    while len(data) - off >= xt.CPU_CHANGE_SIZE:
        try:
            hdr = xt.cpu_change_record.parse(data[off : off + xt.CPU_CHANGE_SIZE])
        except ConstructError as exc:
            raise MalformedRecord("xentrace", str(exc), offset=off, field="header") from exc
        body_start = off + xt.CPU_CHANGE_SIZE
        body = data[body_start : body_start + hdr.window_size]
        stream = io.BytesIO(body)
        recs: list[_Raw] = []
        while stream.tell() < len(body):
            at = stream.tell()
            try:
                r = xt.t_rec.parse_stream(stream)
            except ConstructError:
                break  # incomplete record at the end of a short window
            h = r.header
            recs.append(
                _Raw(hdr.cpu, h.cycles_included, r.cycles or 0, h.event, tuple(r.extra),
                     body_start + at)
            )  # fmt: skip
        out.append((hdr.cpu, recs))
        off = body_start + hdr.window_size
    return out


def reference_decode(path: str | Path, cpu_mhz: float) -> list[RefEvent]:
    """Events (wrap fillers dropped) in xenalyze's processing order, with its ns."""
    data = Path(path).read_bytes()
    windows = parse_windows(data)
    streams: dict[int, list[_Raw]] = {}
    activation: list[int] = []
    for cpu, recs in windows:
        if cpu not in streams:
            streams[cpu] = []
            activation.append(cpu)
        streams[cpu].extend(recs)

    # Cursor state per pCPU, as in struct pcpu_info.
    idx = dict.fromkeys(streams, 0)
    last_tsc = dict.fromkeys(streams, 0)
    order_tsc = dict.fromkeys(streams, 0)
    in_end = dict.fromkeys(streams, False)  # next processing is LOST_RECORDS_END
    order: list[int] = []
    for cpu in activation:  # record_order_insert: before the first entry >= new
        i = 0
        while i < len(order) and order_tsc[order[i]] < order_tsc[cpu]:
            i += 1
        order.insert(i, cpu)
    # The activating cpu-change record is processed first, then the cursor reads.
    pending_activation = set(streams)

    def read(cpu: int) -> bool:
        if idx[cpu] >= len(streams[cpu]):
            return False
        r = streams[cpu][idx[cpu]]
        if r.has_tsc:
            last_tsc[cpu] = r.tsc
            if r.event == xt.TRC_LOST_RECORDS and len(r.extra) == xt.LOST_RECORDS_WORDS:
                order_tsc[cpu] = r.extra[2] | r.extra[3] << 32
            else:
                order_tsc[cpu] = r.tsc
        return True

    processed: list[tuple[int, _Raw, int, int, bool]] = []  # cpu, rec, ri_tsc, order, emit
    while order:
        cpu = order[0]
        if cpu in pending_activation:
            pending_activation.discard(cpu)
            alive = read(cpu)
        else:
            r = streams[cpu][idx[cpu]]
            ri_tsc = r.tsc if r.has_tsc else last_tsc[cpu]
            if in_end[cpu]:
                processed.append((cpu, r, ri_tsc, order_tsc[cpu], False))
                in_end[cpu] = False
                idx[cpu] += 1
                alive = read(cpu)
            else:
                emit = r.event != xt.TRC_TRACE_WRAP_BUFFER
                processed.append((cpu, r, ri_tsc, order_tsc[cpu], emit))
                if r.event == xt.TRC_LOST_RECORDS:
                    in_end[cpu] = True
                    order_tsc[cpu] = max(order_tsc[cpu], ri_tsc)
                    alive = True
                else:
                    idx[cpu] += 1
                    alive = read(cpu)
        if not alive:
            order.pop(0)
            continue
        # record_order_bubble: move down past strictly smaller order_tsc.
        i = 0
        while i + 1 < len(order) and order_tsc[order[i + 1]] < order_tsc[cpu]:
            order[i] = order[i + 1]
            i += 1
        order[i] = cpu

    first = 0
    for _cpu, _r, ri_tsc, o, _emit in processed:
        if ri_tsc:
            first = o
            break
    qhz = xenalyze_cpu_qhz(cpu_mhz)
    out = []
    for cpu, r, ri_tsc, _o, emit in processed:
        if not emit:
            continue
        ns = ((ri_tsc - first) << 10) // qhz if ri_tsc > first else 0
        out.append(RefEvent(cpu, ri_tsc, r.has_tsc, ns, r.event, r.extra, r.file_offset))
    return out

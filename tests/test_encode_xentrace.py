"""The xentrace writer: byte-exact windows, as xentrace frames them."""

from __future__ import annotations

import io
import struct

import pytest

from blktrace_xen.encode.xentrace import (
    TraceRecord,
    encode_record,
    lost_records_record,
    wrap_buffer_record,
    write_xentrace,
)
from blktrace_xen.errors import ModelUsageError
from blktrace_xen.structs import xentrace as xt


def test_record_bytes() -> None:
    rec = TraceRecord(cpu=0, tsc=0x13C50FE6CE, event=0x28004, extra=(1, 2))
    assert encode_record(rec).hex() == "048002a0cee60fc5130000000100000002000000"
    assert encode_record(TraceRecord(0, None, 0x0800F001, ())).hex() == "01f00008"


def test_windows_interleave_cpus_in_poll_order() -> None:
    recs = [TraceRecord(c, 100 + i, xt.TRC_SCHED_WAKE, (c, i)) for i in range(3) for c in (1, 0)]
    buf = io.BytesIO()
    n = write_xentrace(buf, recs, window_records=2)
    data = buf.getvalue()
    assert n == len(data)
    windows = []
    off = 0
    while off < len(data):
        hdr, cpu, size = struct.unpack_from("<IiI", data, off)
        assert hdr == 0x2001F003
        windows.append((cpu, size // 20))
        off += 12 + size
    # cpu 1 fills 2 records first: poll drains cpu 0 then cpu 1; the rest at the end.
    assert windows == [(0, 1), (1, 2), (0, 2), (1, 1)]


def test_lost_records_layout() -> None:
    rec = lost_records_record(2, 500, count=7, domid=3, vcpu=1, first_tsc=(5 << 32) | 9)
    assert rec.extra == (7, 3 | 1 << 16, 9, 5)
    assert rec.event == xt.TRC_LOST_RECORDS and rec.tsc == 500


def test_wrap_filler_sizes() -> None:
    assert len(encode_record(wrap_buffer_record(0, 8))) == 8
    assert wrap_buffer_record(0, 32).tsc is None
    big = wrap_buffer_record(0, 40, tsc=9)
    assert big.tsc == 9 and len(encode_record(big)) == 40


@pytest.mark.parametrize(
    "kwargs",
    [{"cpu": -1}, {"event": 1 << 28}, {"extra": (0,) * 8}, {"extra": (1 << 32,)}, {"tsc": -1}],
)
def test_invalid_records_are_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"cpu": 0, "tsc": 1, "event": 1, "extra": ()}
    base.update(kwargs)
    with pytest.raises(ModelUsageError):
        TraceRecord(**base)  # type: ignore[arg-type]

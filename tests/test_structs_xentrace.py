"""The xentrace construct declarations: hand-written bytes, round trips, sizes."""

from __future__ import annotations

from typing import Any

import pytest

from blktrace_xen.decode.xentrace_walk import LEN_LUT
from blktrace_xen.structs import xentrace as xt


def roundtrip(fmt: Any, data: bytes, obj: dict[str, Any]) -> None:
    parsed = fmt.parse(data)
    for key, value in obj.items():
        got = parsed[key]
        if isinstance(value, dict):
            assert dict((k, got[k]) for k in value) == value
        else:
            assert got == value
    assert fmt.build(obj) == data


def test_t_rec_with_tsc_hand_written() -> None:
    data = bytes.fromhex(
        "048002a0"  # header 0xa0028004: cycles_included=1, extra_u32=2, event=0x28004
        "cee60fc5"  # cycles_lo 0xc50fe6ce
        "13000000"  # cycles_hi 0x13
        "01000000"  # extra[0] = 1
        "02000000"  # extra[1] = 2
    )
    obj = {
        "header": {"cycles_included": True, "extra_u32": 2, "event": 0x28004},
        "cycles": 0x13C50FE6CE,
        "extra": [1, 2],
    }
    roundtrip(xt.t_rec, data, obj)


def test_t_rec_without_tsc_guest_record() -> None:
    data = bytes.fromhex("01f00018efbeadde")  # TRC_GUEST|1, one word, no TSC
    obj = {"header": {"cycles_included": False, "extra_u32": 1, "event": 0x0800F001},
           "cycles": None, "extra": [0xDEADBEEF]}  # fmt: skip
    roundtrip(xt.t_rec, data, obj)


def test_cpu_change_record_is_12_bytes_and_a_t_rec() -> None:
    data = bytes.fromhex("03f001200100000010000000")
    roundtrip(xt.cpu_change_record, data, {"cpu": 1, "window_size": 16})
    assert xt.cpu_change_record.sizeof() == 12
    rec = xt.t_rec.parse(data)
    assert rec.header.event == xt.TRC_TRACE_CPU_CHANGE and list(rec.extra) == [1, 16]


def test_cpu_change_rejects_other_headers() -> None:
    with pytest.raises(Exception, match="parsing"):
        xt.cpu_change_record.parse(bytes(12))


def test_lost_records_payload() -> None:
    data = bytes.fromhex("05000000030001000a00000000000000")
    roundtrip(xt.lost_records_payload, data, {"lost_records": 5, "did": 3, "vid": 1,
                                              "first_tsc": 10})  # fmt: skip
    assert xt.lost_records_payload.sizeof() == 16


@pytest.mark.parametrize("nibble", range(16))
def test_len_lut_matches_declaration(nibble: int) -> None:
    has_tsc, n = nibble >> 3, nibble & 7
    assert LEN_LUT[nibble] == 1 + 2 * has_tsc + n


def test_event_id_helpers() -> None:
    ev = xt.TRC_SCHED_RUNSTATE_CHANGE | 0x120
    assert xt.event_class(ev) == 0x002
    assert xt.event_subclass(ev) == 1
    assert xt.event_minor(ev) == 0x121
    assert xt.event_class(xt.TRC_GUEST | 5) == 0x800
    assert xt.CPU_CHANGE_HEADER == 0x2001F003

"""The fast xentrace decoder: equal to the construct reference, robust to any bytes."""

from __future__ import annotations

import contextlib
import re
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blktrace_xen.decode.xentrace import (
    iter_xentrace_chunks,
    read_xentrace,
    summarize_xentrace,
    tsc_to_ns,
    xenalyze_cpu_qhz,
)
from blktrace_xen.decode.xentrace_ref import reference_decode
from blktrace_xen.decode.xentrace_walk import walk_chain, walk_sequential
from blktrace_xen.encode.xentrace import (
    TraceRecord,
    lost_records_record,
    wrap_buffer_record,
    write_xentrace,
)
from blktrace_xen.errors import BlktraceXenError, DecodeError, InputFileError
from blktrace_xen.schema import EVENTS_SCHEMA, LOST_SCHEMA
from blktrace_xen.structs import xentrace as xt

SETTINGS = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def rows(events: pl.DataFrame) -> list[tuple[object, ...]]:
    return [
        (r["cpu"], r["tsc"], r["has_tsc"], r["ns"], r["event"],
         tuple(r[f"d{i}"] for i in range(r["n_extra"])), r["file_offset"])
        for r in events.iter_rows(named=True)
    ]  # fmt: skip


@st.composite
def record_streams(draw: st.DrawFn) -> tuple[list[TraceRecord], int]:
    """Valid streams with ties across CPUs, records without TSC, losses and wrap fillers."""
    ncpu = draw(st.integers(1, 3))
    tsc = [draw(st.integers(0, 4)) for _ in range(ncpu)]
    recs: list[TraceRecord] = []
    for _ in range(draw(st.integers(1, 40))):
        cpu = draw(st.integers(0, ncpu - 1))
        kind = draw(st.sampled_from(["tsc", "tsc", "tsc", "guest", "lost", "wrap"]))
        words = tuple(draw(st.lists(st.integers(0, 2**32 - 1), max_size=7)))
        if kind == "guest":
            recs.append(TraceRecord(cpu, None, xt.TRC_GUEST | draw(st.integers(0, 9)), words))
        elif kind == "lost":
            first = tsc[cpu] + draw(st.integers(0, 2))
            tsc[cpu] = first + draw(st.integers(0, 2))
            recs.append(lost_records_record(cpu, tsc[cpu], 3, 1, 0, first))
        elif kind == "wrap":
            recs.append(wrap_buffer_record(cpu, draw(st.sampled_from([4, 12, 36])), tsc[cpu]))
        else:
            tsc[cpu] += draw(st.integers(0, 2))
            recs.append(TraceRecord(cpu, tsc[cpu], xt.TRC_SCHED_SWITCH, words))
    return recs, draw(st.integers(1, 6))


@SETTINGS
@given(record_streams())
def test_fast_path_equals_construct_reference(tmp_path: Path, stream: tuple) -> None:
    recs, window = stream
    path = tmp_path / "t.bin"
    write_xentrace(path, recs, window_records=window)
    fast = read_xentrace(path, cpu_mhz=2400.0)
    ref = reference_decode(path, 2400.0)
    assert rows(fast.events) == [
        (e.cpu, e.tsc, e.has_tsc, e.ns, e.event, e.extra, e.file_offset) for e in ref
    ]
    # Streaming in tiny chunks (bounded memory) gives the same frame.
    chunks = list(iter_xentrace_chunks(path, cpu_mhz=2400.0, chunk_records=1))
    assert rows(pl.concat(chunks)) == rows(fast.events) if chunks else not ref


@SETTINGS
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3000), st.integers(0, 9),
       st.sampled_from([8, 16, 64]))  # fmt: skip
def test_chain_walk_equals_sequential(words: list[int], start: int, lane: int) -> None:
    arr = np.asarray(words, dtype=np.uint32)
    s = min(start, len(arr) - 1)
    assert walk_chain(arr, s, lane_words=lane).tolist() == walk_sequential(arr, s).tolist()


def test_chain_walk_phase_locked_data() -> None:
    # Every word reads as a 2-word record: lanes started off-phase never meet.
    arr = np.full(50_000, 0x1000_0001, dtype=np.uint32)
    assert walk_chain(arr, 1, lane_words=64).tolist() == walk_sequential(arr, 1).tolist()


@SETTINGS
@given(st.binary(min_size=1, max_size=600))
def test_any_bytes_decode_or_raise_one_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.bin"
    path.write_bytes(data)
    for fn in (lambda: read_xentrace(path, cpu_mhz=1000.0), lambda: summarize_xentrace(path)):
        with contextlib.suppress(BlktraceXenError):
            fn()


@SETTINGS
@given(record_streams(), st.integers(0, 10_000))
def test_truncated_dump_keeps_complete_records(tmp_path: Path, stream: tuple, cut: int) -> None:
    recs, window = stream
    path = tmp_path / "t.bin"
    full = tmp_path / "full.bin"
    write_xentrace(full, recs, window_records=window)
    data = full.read_bytes()
    path.write_bytes(data[: max(1, cut % len(data))])
    try:
        res = read_xentrace(path, cpu_mhz=2400.0)
    except DecodeError:
        return
    whole = {r[-1] for r in rows(read_xentrace(full, cpu_mhz=2400.0).events)}
    assert {r[-1] for r in rows(res.events)} <= whole


def test_window_claiming_4_gib_is_a_short_window(tmp_path: Path) -> None:
    rec = struct.pack("<IIII", 0x9002_8004 | 0, 100, 0, 7)  # tsc + 1 word
    path = tmp_path / "big.bin"
    path.write_bytes(struct.pack("<IiI", xt.CPU_CHANGE_HEADER, 0, 0xFFFF_FFFC) + rec * 3)
    res = read_xentrace(path, cpu_mhz=2400.0)
    assert res.events.height == 3
    assert any("claims" in w for w in res.warnings)


def test_file_of_zeros_names_offset_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(4096))
    with pytest.raises(DecodeError) as err:
        read_xentrace(path, cpu_mhz=2400.0)
    assert err.value.offset == 0
    assert "0x2001f003" in str(err.value) and str(path) in str(err.value)


def test_garbage_window_header_mid_file(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write_xentrace(path, [TraceRecord(0, 5, xt.TRC_SCHED_WAKE, (1, 2))] * 4, window_records=2)
    data = bytearray(path.read_bytes())
    second = 12 + 2 * 20
    data[second : second + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError) as err:
        read_xentrace(path, cpu_mhz=2400.0)
    assert err.value.offset == second


def test_record_overrunning_its_window(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write_xentrace(path, [TraceRecord(0, 5, xt.TRC_SCHED_WAKE, (1, 2))] * 4, window_records=2)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 32, 0xB002_8004)  # 2nd record claims 3 words: 4 bytes too long
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match="runs past the end") as err:
        read_xentrace(path, cpu_mhz=2400.0)
    assert err.value.offset == 32


@pytest.mark.parametrize("content", [None, b""])
def test_missing_or_empty_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "x.bin"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputFileError, match=str(path)):
        read_xentrace(path)


def test_schema_lost_and_wrap(tmp_path: Path) -> None:
    recs = [
        TraceRecord(0, 1000, xt.TRC_SCHED_WAKE, (0, 1)),
        wrap_buffer_record(0, 40, 1500),
        lost_records_record(0, 3000, count=9, domid=4, vcpu=2, first_tsc=2000),
        TraceRecord(0, 3100, xt.TRC_SCHED_BLOCK, (0, 1)),
    ]
    path = tmp_path / "t.bin"
    write_xentrace(path, recs)
    res = read_xentrace(path, cpu_mhz=1000.0)
    assert res.events.schema == EVENTS_SCHEMA
    assert res.lost.schema == LOST_SCHEMA
    assert res.events["event"].to_list() == [
        xt.TRC_SCHED_WAKE, xt.TRC_LOST_RECORDS, xt.TRC_SCHED_BLOCK
    ]  # fmt: skip
    lost = res.lost.row(0, named=True)
    assert (lost["count"], lost["domid"], lost["vcpu"]) == (9, 4, 2)
    assert lost["first_ns"] == int(tsc_to_ns(np.array([2000]), 1000, 1000.0)[0])
    assert res.meta["lost_records"] == 9 and res.meta["wrap_records"] == 1
    assert not res.meta["cpu_mhz_default"]


def test_default_cpu_mhz_warns_once(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write_xentrace(path, [TraceRecord(0, 5, xt.TRC_SCHED_WAKE, (1, 2))])
    res = read_xentrace(path)
    assert res.meta["cpu_mhz"] == 2400.0 and res.meta["cpu_mhz_default"]
    assert sum("--cpu-mhz" in w for w in res.warnings) == 1


def test_xenalyze_time_formula() -> None:
    # xenalyze: hz from single-precision strtof * 1e6; qhz = (hz << 10) / 1e9.
    assert xenalyze_cpu_qhz(2400.0) == 2457
    assert xenalyze_cpu_qhz(2596.125) == 2658
    ns = tsc_to_ns(np.array([10, 100, 100 + 2658], dtype=np.uint64), 100, 2596.125)
    assert ns.tolist() == [0, 0, 1024]


def test_detect_format(tmp_path: Path) -> None:
    from blktrace_xen.decode.detect import detect_format

    dump = tmp_path / "t.bin"
    write_xentrace(dump, [TraceRecord(0, 5, xt.TRC_SCHED_WAKE, (1, 2))])
    assert detect_format(dump) == "xentrace"
    pcap = tmp_path / "c.pcapng"
    pcap.write_bytes(struct.pack("<I", 0x0A0D0D0A) + bytes(24))
    assert detect_format(pcap) == "ringcap"
    folder = tmp_path / "streams"
    folder.mkdir()
    (folder / "meta.json").write_text("{}")
    assert detect_format(folder) == "streams"
    for bad in (tmp_path / "missing", tmp_path / "empty", tmp_path / "junk", tmp_path):
        if bad.name == "empty":
            bad.write_bytes(b"")
        elif bad.name == "junk":
            bad.write_bytes(b"hello world, not a trace")
        with pytest.raises(InputFileError, match=re.escape(str(bad))):
            detect_format(bad)

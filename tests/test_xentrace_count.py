"""``info``'s counting path (summarize_xentrace) agrees with the full decode."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given

from blktrace_xen.decode import xentrace as xtd
from blktrace_xen.decode.xentrace import read_xentrace, summarize_xentrace
from blktrace_xen.encode.xentrace import TraceRecord, write_xentrace
from blktrace_xen.errors import MalformedRecord
from blktrace_xen.structs import xentrace as xt
from tests.test_decode_xentrace import SETTINGS, record_streams


def expected_summary(path: Path, recs: list[TraceRecord] | None = None) -> dict[str, Any]:
    full = read_xentrace(path, cpu_mhz=2400.0)
    ev = full.events
    per_class = Counter(xt.CLASS_NAMES.get(c, f"{c:#05x}") for c in ev["class"].to_list())
    lost = ev.filter(
        (pl.col("event") == xt.TRC_LOST_RECORDS) & (pl.col("n_extra") == 4) & pl.col("has_tsc")
    )
    out = {
        "records": ev.height,
        "per_class": dict(per_class),
        "per_cpu": {str(c): n for c, n in sorted(Counter(ev["cpu"].to_list()).items())},
        "lost": sorted(
            (r["file_offset"], r["d0"], r["d1"] & 0xFFFF, r["d1"] >> 16, r["d2"] | r["d3"] << 32)
            for r in lost.iter_rows(named=True)
        ),
        "wrap_records": full.meta["wrap_records"],
        "last_tsc": full.meta["last_tsc"],
    }
    if recs is not None:
        # info reports the smallest TSC of any record (wrap fillers included).
        tscs = [r.tsc for r in recs if r.tsc is not None]
        out["first_tsc"] = min(tscs) if tscs else 0
    return out


def got_summary(path: Path, with_first: bool) -> dict[str, Any]:
    meta = summarize_xentrace(path, cpu_mhz=2400.0)
    out = {k: meta[k] for k in ("records", "per_class", "per_cpu", "wrap_records", "last_tsc")}
    out["lost"] = sorted(
        (x["offset"], x["count"], x["domid"], x["vcpu"], x["first_tsc"]) for x in meta["lost"]
    )
    if with_first:
        out["first_tsc"] = meta["first_tsc"]
    return out


@pytest.mark.parametrize("block_bytes", [64, 8 << 20])
@SETTINGS
@given(stream=record_streams())
def test_counts_equal_full_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int, stream: Any
) -> None:
    recs, window = stream
    path = tmp_path / "t.bin"
    write_xentrace(path, recs, window_records=window)
    # Tiny blocks: every window is its own block, so totals carry across blocks.
    monkeypatch.setattr(xtd, "_INFO_BLOCK_BYTES", block_bytes)
    assert got_summary(path, True) == expected_summary(path, recs)


def test_counts_equal_full_decode_on_real_traces(realxen: Path) -> None:
    # 200 k records: blocks long enough for the speculative lanes.
    for path in sorted(realxen.glob("*/trace-all.bin")):
        assert got_summary(path, False) == expected_summary(path)


# Two windows of two 20-byte records (header, TSC, 2 words) each: window headers
# at bytes 0 and 52, records at 12, 32, 64 and 84; the file ends at 104.
SECOND_WINDOW = 12 + 2 * 20


def _corrupt(data: bytearray, case: str) -> bytes:
    if case == "header":
        data[SECOND_WINDOW : SECOND_WINDOW + 4] = b"\xff\xff\xff\xff"
    elif case == "cpu":
        data[SECOND_WINDOW + 4 : SECOND_WINDOW + 8] = (-1).to_bytes(4, "little", signed=True)
    elif case == "window_size":
        data[SECOND_WINDOW + 8 : SECOND_WINDOW + 12] = (42).to_bytes(4, "little")
    elif case == "overrun":
        data[32:36] = (0xB002_8004).to_bytes(4, "little")  # 3 extra words: 4 bytes too long
    return bytes(data)


@pytest.mark.parametrize(
    ("case", "offset", "words"),
    [
        ("header", SECOND_WINDOW, "expected a TRC_TRACE_CPU_CHANGE window header"),
        ("cpu", SECOND_WINDOW, "names cpu -1"),
        ("window_size", SECOND_WINDOW, "window_size 42 is not a multiple of 4"),
        ("overrun", 32, "record of 24 bytes runs past the end of the window of cpu 0 at 0x0"),
    ],
)
def test_bad_framing_is_the_same_error_for_info_and_decode(
    tmp_path: Path, case: str, offset: int, words: str
) -> None:
    path = tmp_path / "t.bin"
    write_xentrace(path, [TraceRecord(0, 5, xt.TRC_SCHED_WAKE, (1, 2))] * 4, window_records=2)
    path.write_bytes(_corrupt(bytearray(path.read_bytes()), case))
    errors = []
    for decode in (read_xentrace, summarize_xentrace):
        with pytest.raises(MalformedRecord) as err:
            decode(path, cpu_mhz=2400.0)
        errors.append((str(err.value), err.value.offset))
    assert errors[0] == errors[1]
    assert errors[0][1] == offset and words in errors[0][0] and str(path) in errors[0][0]


def test_a_record_cut_by_the_end_of_a_short_last_window_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write_xentrace(path, [TraceRecord(0, 5, xt.TRC_SCHED_WAKE, (1, 2))] * 4, window_records=2)
    path.write_bytes(path.read_bytes()[:-8])  # the last record loses its 2 extra words
    full = read_xentrace(path, cpu_mhz=2400.0)
    info = summarize_xentrace(path, cpu_mhz=2400.0)
    assert full.events.height == info["records"] == 3
    assert full.warnings == info["warnings"]
    assert any("incomplete last record at offset 0x54" in w for w in info["warnings"])

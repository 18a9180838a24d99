"""Hostile *content* end to end: inputs that decode, carrying values no driver would write.

The decoders' fuzz tests cover bytes that do not decode. Here every input is
well-formed (written by the project's own writers) but its values are
adversarial: blkif instrumentation records with random words or too few of
them, ring pages of random bytes or absurd producers, odd ring parameters,
xenstore writes that mean nothing, streams folders with extreme values. The
promise checked at each stage (load -> analyses -> replay -> report, and the
CLI): it succeeds or raises a BlktraceXenError, never another exception, and
finishes within a deadline.
"""

from __future__ import annotations

import random
import tempfile
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from blktrace_xen import analyses, report, schema
from blktrace_xen.cli import app
from blktrace_xen.encode.blkif import RingPage
from blktrace_xen.encode.ringcap import RingcapWriter
from blktrace_xen.encode.xentrace import TraceRecord, write_xentrace
from blktrace_xen.errors import BlktraceXenError
from blktrace_xen.replay import replay
from blktrace_xen.streams import Streams
from blktrace_xen.streams.load import load_streams
from blktrace_xen.streams.store import write_streams

LOGICS = ["linux-default", "xbdback-2005-immediate", "xbd-2006-recovery-as-posted"]
TRC_GUEST_BLKIF = 0x0800FB00  # TRC_GUEST | minor 0xb00: formats/blkif.toml's events
HYPERVISOR_EVENTS = (0x0001F001, 0x00041001, 0x00041002, 0x0010F001, 0x0010F002, 0x00021001)
U32 = 0xFFFFFFFF
T = TypeVar("T")

HOSTILE = settings(
    derandomize=True,
    max_examples=12,
    deadline=timedelta(seconds=20),  # a hang shows as a failure, not a stuck CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pipeline(paths: list[Path]) -> None:
    """Every stage, in process; a BlktraceXenError anywhere is an accepted outcome."""
    try:
        streams = load_streams(paths)
        run_after_load(streams)
    except BlktraceXenError:
        pass


def run_after_load(streams: Streams) -> None:
    findings = analyses.run_rules(streams)
    btt = analyses.btt_table(streams)
    verdicts = [v.to_dict() for v in replay(streams, LOGICS).verdicts]
    data = report.assemble(streams, findings, btt=btt, verdicts=verdicts)
    assert report.render_html(data)
    assert report.render_markdown(data)


# --- xentrace dumps with hostile blkif instrumentation ------------------------------

# Words that break assumptions: zero, ring-key-like, "negative" u32s, wrap edges.
words = st.one_of(
    st.sampled_from([0, 1, 2, 5, 6, 7, 31, 32, 51712, 0x10000, 0x7FFFFFFF, 0x80000000, U32]),
    st.integers(0, U32),
)


@st.composite
def blkif_record(draw: st.DrawFn) -> tuple[int, tuple[int, ...]]:
    """One instrumentation or hypervisor record: (event, extra words), 0..7 words."""
    if draw(st.integers(0, 9)) == 0:
        event = draw(st.sampled_from(HYPERVISOR_EVENTS))
    else:
        event = TRC_GUEST_BLKIF | draw(st.integers(1, 0x11))  # 0x11: no such event
    # A few rings, so requests, responses and control meet on one ring key.
    key = draw(st.integers(0, 2)) | draw(st.sampled_from([0, 0, 1, 0xFFFF])) << 16
    vdev = draw(st.sampled_from([51712, 0, U32]))
    rest = draw(st.lists(words, min_size=5, max_size=5))
    n = draw(st.sampled_from([7, 7, 0, 1, 2, 3, 4, 5, 6]))  # fewer words than the catalog's
    return event, tuple([key, vdev, *rest][:n])


@st.composite
def xentrace_records(draw: st.DrawFn) -> list[TraceRecord]:
    tsc = draw(st.sampled_from([0, 1000, 1 << 63, (1 << 64) - 10**7]))
    out = []
    for event, extra in draw(st.lists(blkif_record(), min_size=1, max_size=30)):
        tsc = (tsc + draw(st.sampled_from([0, 1, 1000, 10**6]))) & ((1 << 64) - 1)
        own_tsc = draw(st.booleans())
        out.append(
            TraceRecord(
                cpu=draw(st.integers(0, 1)), tsc=tsc if own_tsc else None, event=event, extra=extra
            )
        )
    return out


@HOSTILE
@given(records=xentrace_records())
def test_xentrace_with_hostile_blkif_content(records: list[TraceRecord]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.bin"
        write_xentrace(path, records)
        pipeline([path])


# --- regression cases found by the tests above ----------------------------------


def _push(domid: int, idx: int, rid: int, op: int = 1, nsec: int = 8) -> TraceRecord:
    return TraceRecord(
        cpu=0,
        tsc=None,
        event=TRC_GUEST_BLKIF | 0x01,
        extra=(domid, 51712, idx, rid & U32, rid >> 32, op | 1 << 16, nsec),
    )


def _sector(domid: int, idx: int, sector: int) -> TraceRecord:
    return TraceRecord(
        cpu=0,
        tsc=None,
        event=TRC_GUEST_BLKIF | 0x02,
        extra=(domid, 51712, idx, sector & U32, sector >> 32),
    )


def _rsp(domid: int, idx: int, rid: int, op: int = 1, *, words: int = 7) -> TraceRecord:
    full = (domid, 51712, idx, rid & U32, rid >> 32, op, 0)
    return TraceRecord(cpu=0, tsc=None, event=TRC_GUEST_BLKIF | 0x04, extra=full[:words])


def _replay_trace(tmp_path: Path, records: list[TraceRecord]) -> list[str]:
    path = tmp_path / "trace.bin"
    write_xentrace(path, [TraceRecord(cpu=0, tsc=1000, event=0x00041001, extra=(1,)), *records])
    result = replay(load_streams([path]), LOGICS)
    return [c.kind for v in result.verdicts for c in v.caveats] + [
        c.kind for c in result.input.caveats
    ]


def test_replay_takes_request_ids_above_int64(tmp_path: Path) -> None:
    # blkif ids are opaque u64 (Linux puts a pointer-sized value there); replay cast
    # them to i64 and polars refused 2**63 and above.
    rid = (1 << 64) - 2
    kinds = _replay_trace(tmp_path, [_push(1, 0, rid), _sector(1, 0, 8), _rsp(1, 0, rid)])
    assert "unplayable" not in kinds


def test_replay_skips_responses_without_an_id(tmp_path: Path) -> None:
    # A response record of 3 words carries no id: the model compared None with ints.
    kinds = _replay_trace(tmp_path, [_push(1, 0, 5), _sector(1, 0, 8), _rsp(1, 0, 5, words=3)])
    assert "unplayable" in kinds


def test_replay_without_the_sector_record(tmp_path: Path) -> None:
    # A push without its blkif_req_sector leaves sector_number null (docs): the disk
    # oracle was handed None for the sector.
    kinds = _replay_trace(tmp_path, [_push(1, 0, 5), _rsp(1, 0, 5)])
    assert "sector-unknown" in kinds


def test_replay_with_a_sector_beyond_any_disk(tmp_path: Path) -> None:
    kinds = _replay_trace(tmp_path, [_push(1, 0, 5), _sector(1, 0, (1 << 64) - 1), _rsp(1, 0, 5)])
    assert "sector-unknown" in kinds


# --- ring captures: random pages, absurd producers, odd parameters, bad xenstore -----


def _write_capture(path: Path, data: st.DataObject) -> None:
    draw = data.draw
    with RingcapWriter(path) as w:
        rings = []
        for _ in range(draw(st.integers(1, 3))):
            abi = draw(st.sampled_from(["x86_64-abi", "x86_32-abi"]))
            order = draw(st.sampled_from([0, 0, 1]))
            iface = w.add_ring(
                draw(st.sampled_from([0, 1, 0xFFFF])),
                draw(st.sampled_from([51712, 0, U32])),
                draw(st.sampled_from([0, 1, 0xFFFF])),
                abi=abi,
                ring_page_order=order,
                backend_domid=draw(st.sampled_from([0, 0xFFFF])),
            )
            rings.append((iface, RingPage(abi, order)))
        xs = w.add_xenstore() if draw(st.booleans()) else None
        ns = draw(st.sampled_from([0, 1, 1 << 62]))
        for _ in range(draw(st.integers(1, 20))):
            iface, page = draw(st.sampled_from(rings))
            nr = page.geometry.nr_ents
            if draw(st.integers(0, 6)) == 0:
                # random page bytes, from a drawn seed (a 4 KiB draw is too large a base example)
                body = random.Random(draw(st.integers(0, 1 << 32))).randbytes(page.geometry.nbytes)
            else:
                for _ in range(draw(st.integers(0, 4))):
                    idx = draw(st.integers(0, nr - 1))
                    page.put_raw(idx, draw(st.binary(min_size=1, max_size=64)))
                # producers: ahead by a little or a lot, backwards, around the 2**32 wrap
                page.req_prod = draw(
                    st.sampled_from([page.req_prod, page.req_prod + 1, page.req_prod + 40])
                    | st.sampled_from([page.req_prod - 3, U32, 1 << 31])
                    | st.integers(0, U32)
                )
                page.rsp_prod = draw(
                    st.sampled_from([page.rsp_prod, page.rsp_prod + 1, page.req_prod])
                    | st.sampled_from([page.rsp_prod - 2, page.req_prod + 5, 1 << 31])
                    | st.integers(0, U32)
                )
                page.req_event = draw(words)
                body = page.to_bytes()
            ns += draw(st.sampled_from([0, 1, 1000, 10**9]))
            tsc = draw(st.sampled_from([None, 0, ns, (1 << 64) - 1]))
            w.write_snapshot(iface, ns, body, tsc=tsc)
            if xs is not None and draw(st.booleans()):
                w.write_xenstore(
                    ns,
                    draw(
                        st.sampled_from(
                            [
                                "backend/vbd/1/51712/state",
                                "/local/domain/1/device/vbd/51712/state",
                                "backend/vbd/x/y/state",
                                "garbage",
                                "",
                            ]
                        )
                    ),
                    draw(st.sampled_from(["4", "6", "99", "-3", "", "=", "99999999999999999999"])),
                )


@HOSTILE
@given(data=st.data())
def test_ring_capture_with_hostile_content(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ring.pcapng"
        _write_capture(path, data)
        pipeline([path])


def test_rsp_prod_jumping_by_2_31_is_a_gap_not_billions_of_rows(tmp_path: Path) -> None:
    # The response span was materialised index by index: a jump of 2**31 - 1 hung the
    # decoder building a 2-billion-row array.
    path = tmp_path / "ring.pcapng"
    page = RingPage("x86_64-abi", 0)
    with RingcapWriter(path) as w:
        iface = w.add_ring(1, 51712, 0)
        w.write_snapshot(iface, 1000, page.to_bytes())
        page.rsp_prod = (1 << 31) - 1
        w.write_snapshot(iface, 2000, page.to_bytes())
    streams = load_streams([path])
    rsp_gaps = streams.gaps.filter(pl.col("producer") == "rsp")
    assert rsp_gaps.select("from_idx", "count").rows() == [(0, (1 << 31) - 1)]
    assert streams.responses.height == 0


def _in_thread(fn: Callable[[], T], seconds: float) -> T:
    """``fn()``, failing (not hanging the suite) when it runs past ``seconds``."""
    out: list[T] = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"did not finish within {seconds} s"
    return out[0]


def test_backend_without_overflow_check_stops_on_a_bogus_req_prod(tmp_path: Path) -> None:
    # xbdback 2005 has no RING_REQUEST_PROD_OVERFLOW check and answers garbage slots at
    # once, so its consume loop ran to a req_prod far ahead index by index: a hang.
    path = tmp_path / "ring.pcapng"
    page = RingPage("x86_64-abi", 0)
    with RingcapWriter(path) as w:
        iface = w.add_ring(1, 51712, 0)
        # found by the hypothesis test: req_prod 371 M ahead of rsp_prod in the first snapshot
        page.req_prod, page.rsp_prod = 3626764237, 3255389356
        w.write_snapshot(iface, 1000, page.to_bytes())
        w.write_snapshot(iface, 2000, page.to_bytes())
    streams = load_streams([path])
    result = _in_thread(lambda: replay(streams, ["xbdback-2005-immediate"]), 60)
    runaway = [
        v
        for v in result.verdicts[0].run.result.violations
        if v.invariant == "implausible-producer" and v.evidence.get("runaway")
    ]
    assert runaway


# --- streams folders: valid schema, adversarial values ------------------------------

I64 = (-(1 << 63), (1 << 63) - 1)


def _extremes(dtype: pl.DataType) -> st.SearchStrategy[object]:
    """Nulls, bounds and small values of a column's type (duplicates come for free)."""
    if isinstance(dtype, pl.Enum):
        return st.none() | st.sampled_from(list(dtype.categories))
    if dtype == pl.Boolean:
        return st.none() | st.booleans()
    if dtype == pl.String:
        return st.none() | st.sampled_from(["", "{", "[]", '{"a": 1}', "x" * 300, "é\n<script>"])
    if dtype.is_float():
        return st.none() | st.sampled_from([0.0, 1.0, -1.0, float("nan"), float("inf")])
    if dtype.is_integer():
        bounds: dict[pl.DataType, tuple[int, int]] = {
            pl.UInt8(): (0, 255),
            pl.UInt16(): (0, 0xFFFF),
            pl.UInt32(): (0, U32),
            pl.UInt64(): (0, (1 << 64) - 1),
            pl.Int16(): (-(1 << 15), (1 << 15) - 1),
            pl.Int64(): I64,
        }
        lo, hi = bounds[dtype]
        edges = [v for v in (lo, hi, 0, 1, 2, 31, 32, 51712) if lo <= v <= hi]
        return st.none() | st.sampled_from(edges) | st.integers(lo, hi)
    raise AssertionError(f"no strategy for {dtype}")  # a new schema dtype needs one


def _table(name: str) -> st.SearchStrategy[pl.DataFrame]:
    cols = schema.TABLES[name]
    row = st.fixed_dictionaries({c: _extremes(dt) for c, dt in cols.items()})
    return st.lists(row, max_size=6).map(lambda rows: pl.DataFrame(rows, schema=cols, orient="row"))


TABLES = ("requests", "responses", "control", "io", "snapshots", "rings", "gaps", "lost")


@HOSTILE
@given(frames=st.fixed_dictionaries({t: _table(t) for t in TABLES}))
def test_streams_folder_with_adversarial_values(frames: dict[str, pl.DataFrame]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "streams"
        write_streams(Streams(**frames, meta={"warnings": []}), folder)
        pipeline([folder])


# --- the CLI: garbage files give one error line and exit 1 ---------------------------

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["analyze"],
        ["report", "-o", "{tmp}/r.html"],
        ["replay", "--logic", "linux-default"],
        ["streams", "-o", "{tmp}/s"],
        ["ingest", "-o", "{tmp}/i"],
        ["info"],
        ["dump"],
    ],
)
@pytest.mark.parametrize("head", [b"", b"\x0a\x0d\x0d\x0a"], ids=["xentrace", "pcapng"])
def test_cli_garbage_is_one_error_line(tmp_path: Path, args: list[str], head: bytes) -> None:
    path = tmp_path / "garbage.bin"
    path.write_bytes(head + random.Random(18).randbytes(1000))
    cmd, *rest = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, [cmd, str(path), *rest])
    assert result.exit_code == 1, result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        result.output.strip().splitlines()[-1]
    ]
    assert result.output.count("error:") == 1


Rows = list[dict[str, object]]


def _streams(**rows: Rows) -> Streams:
    frames: dict[str, Any] = {t: schema.conform(pl.DataFrame(r), t) for t, r in rows.items()}
    return Streams(**frames)


RING_ROW = {"domid": 1, "vdev": 51712, "queue": 0, "session": 0}


@pytest.mark.parametrize(
    "rows",
    [
        # rows whose ring is partly null: int(None) building the ring keys
        {"requests": [{**RING_ROW, "domid": None, "ns": 5, "idx": 0, "id": 1, "seen": "full"}]},
        {"control": [{**RING_ROW, "domid": None, "ns": 5, "kind": "suspend", "side": "front"}]},
        # xenbus states (the controls replay infers from a capture) naming no domain or time
        {
            "control": [
                {
                    **RING_ROW,
                    "domid": None,
                    "ns": 5,
                    "kind": "xenbus_state",
                    "side": "front",
                    "value": 1,
                }
            ]
        },
        {"control": [{**RING_ROW, "ns": None, "kind": "xenbus_state", "side": "back", "value": 6}]},
        # null times: numpy's min of a nullable column is NaN
        {"lost": [{"cpu": 0, "ns": None, "count": 3}]},
        {"gaps": [{**RING_ROW, "ns": None, "producer": "req", "count": 3}]},
        # a sector count no i64 holds
        {
            "requests": [
                {
                    **RING_ROW,
                    "ns": 5,
                    "idx": 0,
                    "id": 1,
                    "operation": 1,
                    "sector_number": 8,
                    "nr_sectors": (1 << 64) - 1,
                    "seen": "full",
                }
            ]
        },
    ],
    ids=[
        "request-null-domid",
        "control-null-domid",
        "xenbus-null-domid",
        "xenbus-null-ns",
        "lost-null-ns",
        "gap-null-ns",
        "nr-sectors",
    ],
)
def test_replay_of_streams_with_adversarial_values(
    rows: dict[str, list[dict[str, object]]],
) -> None:
    result = replay(_streams(**rows), LOGICS)
    assert len(result.verdicts) == len(LOGICS)


def test_report_labels_a_finding_whose_domid_is_null() -> None:
    # vdev and queue set but domid null: the label was null and sorting None with str failed.
    findings = schema.conform(
        pl.DataFrame(
            [
                {
                    "rule": "BX-X",
                    "severity": "high",
                    "domid": None,
                    "vdev": 51712,
                    "queue": 0,
                    "ns": 0,
                }
            ]
        ),
        "findings",
    )
    data = report.assemble(Streams(), findings)
    assert "(global)" in report.render_html(data)

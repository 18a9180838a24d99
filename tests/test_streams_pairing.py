"""Pairing recovers exactly the generated request/response pairs, from events and from captures.

Random valid blkif workloads (ids reused LIFO as blkfront's shadow free list
does, out-of-order completion, indices wrapping past 2**32, several rings,
several events per timestamp) are recorded two ways: as blkif instrumentation
events (the words formats/blkif.toml declares) and as a pcapng ring capture
(RingcapWriter + RingPage snapshots). Both must pair to exactly the generated
pairs, and give the same io frame up to the capture's time resolution.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
from hypothesis import HealthCheck, given, settings

from blktrace_xen import schema
from blktrace_xen.catalog import EventDef, load_catalog
from blktrace_xen.decode.ringcap import read_ringcap
from blktrace_xen.encode.blkif import RingPage
from blktrace_xen.encode.ringcap import RingcapWriter
from blktrace_xen.encode.xentrace import TraceRecord, write_xentrace
from blktrace_xen.streams.assemble import assemble
from blktrace_xen.streams.from_events import streams_from_events
from blktrace_xen.streams.from_ring import capture_parts
from blktrace_xen.streams.load import load_streams

NR_ENTS = 32
M32 = (1 << 32) - 1
SNAP_NS = 1000


@dataclass
class Ring:
    domid: int
    vdev: int
    queue: int
    req_prod: int
    rsp_prod: int = 0
    free: list[int] = field(default_factory=list)
    inflight: list[tuple[int, int, int, int]] = field(default_factory=list)  # id, idx, op, sector
    seen_req: int = 0  # req_prod at the last snapshot
    seen_rsp: int = 0
    page: RingPage = field(default_factory=lambda: RingPage("x86_64-abi", 0))


@dataclass
class Workload:
    rings: list[Ring]
    # (ring no, t, kind, fields)
    actions: list[tuple[int, int, str, dict[str, int]]] = field(default_factory=list)
    # (ring no, t) snapshot times
    snaps: list[tuple[int, int, bytes]] = field(default_factory=list)
    pairs: set[tuple[int, int, int, int, int | None]] = field(default_factory=set)


def _lt(a: int, b: int) -> bool:
    """a < b in ring-index (mod 2**32) order."""
    return a != b and ((b - a) & M32) < (1 << 31)


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    n_rings = draw(st.integers(1, 3))
    rings = []
    for r in range(n_rings):
        start = draw(st.sampled_from([0, 5, (1 << 32) - 7, (1 << 32) - 40]))
        ring = Ring(domid=r + 1, vdev=51712 + 16 * r, queue=r % 2, req_prod=start, rsp_prod=start)
        ring.seen_req = ring.seen_rsp = start
        ring.free = list(range(NR_ENTS - 1, -1, -1))
        ring.page.req_prod = ring.page.rsp_prod = start
        rings.append(ring)
    w = Workload(rings=rings)
    t = SNAP_NS
    steps = draw(
        st.lists(
            st.tuples(st.integers(0, n_rings - 1), st.integers(0, 99), st.booleans()),
            min_size=20,
            max_size=150,
        )
    )
    for r, choice, snap_after in steps:
        ring = rings[r]
        issue = ring.free and (not ring.inflight or choice < 55)
        if issue:
            idx = ring.req_prod
            # the response that shares this slot must have been captured first
            if _lt(ring.seen_rsp, ((idx - NR_ENTS) & M32) + 1) and ring.rsp_prod != ring.seen_rsp:
                _snapshot(w, r, t)
                t += SNAP_NS
            rid = ring.free.pop()
            op = choice % 2
            sector = choice * 8 + r
            ring.page.put_request(
                idx, operation=op, id=rid, sector_number=sector, segments=[(100 + rid, 0, 7)]
            )
            ring.req_prod = (idx + 1) & M32
            ring.page.req_prod = ring.req_prod
            ring.inflight.append((rid, idx, op, sector))
            w.actions.append((r, t, "req", dict(idx=idx, id=rid, operation=op, sector=sector)))
        else:
            k = choice % len(ring.inflight)
            rid, ridx, op, _ = ring.inflight.pop(k)
            j = ring.rsp_prod
            if not _lt(j, ring.seen_req):  # request j's slot not captured yet
                _snapshot(w, r, t)
                t += SNAP_NS
            ring.page.put_response(j, id=rid, operation=op, status=0)
            ring.rsp_prod = (j + 1) & M32
            ring.page.rsp_prod = ring.rsp_prod
            ring.free.append(rid)
            w.actions.append((r, t, "rsp", dict(idx=j, id=rid, operation=op, status=0)))
            w.pairs.add((r, rid, ridx, j, op))
        if snap_after:
            _snapshot(w, r, t)
            t += SNAP_NS
    for r in range(n_rings):
        _snapshot(w, r, t)
        for rid, ridx, _, _ in rings[r].inflight:
            w.pairs.add((r, rid, ridx, -1, None))
    return w


def _snapshot(w: Workload, r: int, t: int) -> None:
    ring = w.rings[r]
    w.snaps.append((r, t, ring.page.to_bytes()))
    ring.seen_req, ring.seen_rsp = ring.req_prod, ring.rsp_prod


def _encode(spec: EventDef, values: dict[str, int]) -> list[int]:
    words = [0] * 7
    for f in spec.fields:
        assert f.word is not None  # the blkif events take every field from the payload
        v = values[f.name]
        if f.wide:
            words[f.word] = v & M32
            words[f.word + 1] = (v >> 32) & M32
        else:
            lo, hi = f.span
            words[f.word] |= (v & ((1 << (hi - lo + 1)) - 1)) << lo
    return words[: max(f.words_needed for f in spec.fields)]


def events_frame(w: Workload) -> pl.DataFrame:
    cat = load_catalog()
    rows = []

    def add(t: int, name: str, values: dict[str, int]) -> None:
        spec = cat.by_name(name)
        words = _encode(spec, values)
        rows.append(
            {
                "cpu": 0,
                "tsc": t,
                "has_tsc": False,
                "ns": t,
                "event": spec.id,
                "n_extra": len(words),
                **{f"d{i}": (words[i] if i < len(words) else 0) for i in range(7)},
            }
        )

    for r, t, kind, f in w.actions:
        ring = w.rings[r]
        key = dict(domid=ring.domid, vdev=ring.vdev, queue=ring.queue, idx=f["idx"])
        if kind == "req":
            add(
                t,
                "blkif_req_push",
                dict(
                    key,
                    id=f["id"],
                    operation=f["operation"],
                    indirect_op=0,
                    nr_segments=1,
                    nr_sectors=8,
                ),
            )
            add(t, "blkif_req_sector", dict(key, sector_number=f["sector"]))
        else:
            add(t, "blkif_rsp_push", dict(key, id=f["id"], operation=f["operation"], status=0))
    return schema.conform(pl.DataFrame(rows), "events") if rows else schema.empty("events")


def trace_file(w: Workload, path: Path) -> None:
    """The events written as a real xentrace dump: guest records carry no TSC, so a
    TSC-bearing hypervisor record (an irq) precedes each timestamp, as on a live host."""
    frame = events_frame(w)
    records: list[TraceRecord] = []
    last = None
    for row in frame.iter_rows(named=True):
        if row["tsc"] != last:
            records.append(TraceRecord(0, 10_000 + row["tsc"], 0x00802008, (1, 0, 0)))
            last = row["tsc"]
        words = tuple(row[f"d{i}"] for i in range(row["n_extra"]))
        records.append(TraceRecord(0, None, row["event"], words))
    write_xentrace(path, records)


def capture_file(w: Workload, path: Path) -> None:
    with RingcapWriter(path) as writer:
        ifaces = [writer.add_ring(r.domid, r.vdev, r.queue) for r in w.rings]
        for r, t, page in w.snaps:
            writer.write_snapshot(ifaces[r], t, page, tsc=t + 17)


def _pairs(io: pl.DataFrame, w: Workload) -> set[tuple[int, int, int, int, int | None]]:
    by_key = {(r.domid, r.vdev, r.queue): i for i, r in enumerate(w.rings)}
    out = set()
    for row in io.iter_rows(named=True):
        r = by_key[(row["domid"], row["vdev"], row["queue"])]
        done = row["rsp_idx"] is not None
        out.add(
            (
                r,
                row["id"],
                row["req_idx"],
                row["rsp_idx"] if done else -1,
                row["operation"] if done else None,
            )
        )
    return out


SETTINGS = settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(workloads())
def test_pairing_from_events_recovers_the_workload(w: Workload) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "w.bin"
        trace_file(w, path)
        s = load_streams([path], cpu_mhz=1000.0)
    assert _pairs(s.io, w) == w.pairs
    s = streams_from_events(events_frame(w))
    assert _pairs(s.io, w) == w.pairs
    assert s.pairing.height == 0
    unanswered = s.io.filter(pl.col("rsp_ns").is_null())
    assert set(unanswered["outcome"].to_list()) <= {"trace_end"}
    assert s.io.filter(pl.col("rsp_ns").is_not_null())["outcome"].unique().to_list() in (
        [],
        ["completed"],
    )


@SETTINGS
@given(workloads())
def test_pairing_from_capture_recovers_the_workload_and_matches_events(
    tmp_path_factory: object, w: Workload
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "w.pcapng"
        capture_file(w, path)
        parts = capture_parts(read_ringcap(path))
    s = assemble(**parts, meta={})
    assert _pairs(s.io, w) == w.pairs
    assert s.pairing.height == 0
    assert s.requests["seen"].unique().to_list() in ([], ["full"])

    ev = streams_from_events(events_frame(w)).io
    same = [
        "domid",
        "vdev",
        "queue",
        "session",
        "id",
        "operation",
        "req_idx",
        "rsp_idx",
        "status",
        "sector_number",
        "reorder",
        "outcome",
    ]
    key = ["domid", "vdev", "queue", "req_idx"]
    a, b = ev.sort(key), s.io.sort(key)
    assert a.select(same).equals(b.select(same))
    # times agree up to the capture's resolution: a capture sees an event at
    # the first snapshot after it, never before
    for col in ("req_ns", "rsp_ns"):
        lag = (b[col] - a[col]).drop_nulls()
        assert lag.min() is None or (lag.min() >= 0 and lag.max() <= 2 * SNAP_NS * 200)

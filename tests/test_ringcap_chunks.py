"""The vectorised block walk and the chunked reader give the per-block, whole-capture result."""

from __future__ import annotations

import random
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from blktrace_xen.decode.ring import (
    RingStreams,
    RingStreamsBuilder,
    derive_ring_streams,
    derive_ring_streams_chunked,
)
from blktrace_xen.decode.ringcap import RingCapture, iter_ringcap_chunks, read_ringcap
from blktrace_xen.encode.blkif import RingPage
from blktrace_xen.encode.ringcap import RingcapWriter
from blktrace_xen.errors import BlktraceXenError, InputFileError
from blktrace_xen.structs.pcapng import BT_EPB, BT_IDB, LINKTYPE_USER0

_RINGS = [
    # (domid, vdev, queue, abi, order)
    (1, 51712, 0, "x86_64-abi", 0),
    (2, 51728, 1, "x86_32-abi", 0),
    (3, 51744, 0, "x86_64-abi", 1),
]


class _Traffic:
    """Random, mostly plausible traffic on one ring: publish, answer (in or out of order)."""

    def __init__(self, rng: random.Random, abi: str, order: int) -> None:
        self.rng = rng
        self.r = RingPage(abi, order)
        self.n = self.r.geometry.nr_ents
        start = rng.choice([0, 2**32 - 5, rng.randrange(2**32)])
        self.r.req_prod = self.r.rsp_prod = self.prod = self.cons = start
        self.pending: list[tuple[int, int, int]] = []  # (idx, id, op)

    def step(self) -> bytes:
        rng, r = self.rng, self.r
        roll = rng.random()
        if roll < 0.03:  # re-initialised ring: producers move back
            self.prod = self.cons = (self.prod - rng.randrange(1, 50)) & 0xFFFFFFFF
            r.req_prod = r.rsp_prod = self.prod
            self.pending = []
            return r.to_bytes()
        if roll < 0.06 and self.pending:  # frontend rewrites a published request
            idx, rid, op = self.pending[0]
            r.put_request(idx, operation=op, id=rid, sector_number=99, segments=[(3, 0, 7)])
            return r.to_bytes()
        for _ in range(rng.randrange(0, self.n + 8)):  # may lap the ring between polls
            idx = self.prod
            rid, op = rng.randrange(64), rng.choice([0, 1, 1, 2, 3, 5, 6, 9])
            r.put_request(idx, operation=op, id=rid, sector_number=idx * 8, segments=[(1, 0, 7)])
            self.pending.append((idx, rid, op))
            self.prod = (self.prod + 1) & 0xFFFFFFFF
        r.req_prod = self.prod
        answer = rng.randrange(0, len(self.pending) + 1)
        done, self.pending = self.pending[:answer], self.pending[answer:]
        if rng.random() < 0.3:
            rng.shuffle(done)
        for rid_op in done:
            r.put_response(self.cons, id=rid_op[1], operation=rid_op[2], status=0)
            self.cons = (self.cons + 1) & 0xFFFFFFFF
        r.rsp_prod = self.cons
        return r.to_bytes()


def _capture(path: Path, seed: int, nsnap: int) -> None:
    """Interleaved rings, xenstore lines, mid-file declarations and sections, odd packets."""
    rng = random.Random(seed)
    with RingcapWriter(path) as w:
        xs = w.add_xenstore()
        live: list[tuple[int, _Traffic]] = []
        for k in range(nsnap):
            if not live or (len(live) < len(_RINGS) and rng.random() < 0.05):
                dom, vdev, q, abi, order = _RINGS[len(live)]
                iface = w.add_ring(dom, vdev, q, abi=abi, ring_page_order=order)
                live.append((iface, _Traffic(rng, abi, order)))
            roll = rng.random()
            if roll < 0.05:
                w.write_xenstore(k * 10, f"/local/domain/1/device/vbd/51712/k{k}", str(k), iface=xs)
            elif roll < 0.07:
                w.write_xenstore(k * 10, "no-equals-sign", "", iface=xs)
            elif roll < 0.08:
                w._sizes[live[0][0]] = 100  # a foreign writer's packet of the wrong size
                w.write_snapshot(live[0][0], k * 10, bytes(100))
                w._sizes[live[0][0]] = live[0][1].r.geometry.nbytes
            # mostly one ring at a time (long equal runs), sometimes interleaved
            iface, t = live[-1] if rng.random() < 0.7 else rng.choice(live)
            tsc = None if rng.random() < 0.05 else rng.randrange(2**64)
            w.write_snapshot(iface, k * 10 + 5, t.step(), tsc=tsc)


def _damage(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    how = rng.randrange(4)
    if how == 1:  # truncated
        del data[rng.randrange(len(data) // 2, len(data)) :]
    elif how == 2:  # a flipped byte anywhere
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == 3:  # a bad tsc comment (not digits) in one packet
        at = data.find(b"tsc=", rng.randrange(len(data)))
        if at >= 0:
            data[at + 10] = ord("x")
    path.write_bytes(bytes(data))


def _assert_captures_equal(a: RingCapture, b: RingCapture) -> None:
    assert_frame_equal(a.rings, b.rings)
    assert_frame_equal(a.snapshots, b.snapshots)
    assert_frame_equal(a.xenstore, b.xenstore)
    assert a.warnings == b.warnings
    assert list(a.pages) == list(b.pages)
    for k in a.pages:
        assert np.array_equal(a.pages[k], b.pages[k])


def _assert_streams_equal(a: RingStreams, b: RingStreams) -> None:
    for name in ("requests", "responses", "gaps", "mutations", "anomalies"):
        assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.warnings == b.warnings


def _chunked(path: Path, per_chunk: int) -> tuple[RingCapture, RingStreams]:
    """Chunks re-assembled into one capture (pages copied), and the chunked derivation."""
    b = RingStreamsBuilder()
    snaps, xs, warns = [], [], []
    pages: dict[Any, list[np.ndarray[Any, Any]]] = {}
    rings = pl.DataFrame()
    for ch in iter_ringcap_chunks(path, snapshots_per_chunk=per_chunk):
        assert ch.snapshots.height <= per_chunk
        b.add(ch)
        snaps.append(ch.snapshots)
        xs.append(ch.xenstore)
        warns.extend(ch.warnings)
        for k, v in ch.pages.items():
            pages.setdefault(k, []).append(np.array(v))
        rings = ch.rings
    cap = RingCapture(
        str(path),
        rings,
        pl.concat(snaps),
        {k: np.concatenate(v) for k, v in pages.items()},
        pl.concat(xs),
        warns,
    )
    return cap, b.finish()


def _by_ring(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(["domid", "vdev", "queue", "snap"], maintain_order=True)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    nsnap=st.integers(1, 120),
    per_chunk=st.integers(1, 50),
)
def test_vectorised_and_chunked_equal_the_block_walk(seed: int, nsnap: int, per_chunk: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.pcapng"
        _capture(p, seed, nsnap)
        _damage(p, random.Random(seed))
        try:
            slow = read_ringcap(p, _vector=False)
        except BlktraceXenError as exc:
            # the same error, from the same block, on every path
            with pytest.raises(type(exc)) as info:
                read_ringcap(p)
            assert str(info.value) == str(exc)
            with pytest.raises(type(exc)) as info:
                list(iter_ringcap_chunks(p, snapshots_per_chunk=per_chunk))
            assert str(info.value) == str(exc)
            return
        fast = read_ringcap(p)
        _assert_captures_equal(slow, fast)
        whole = derive_ring_streams(fast)
        _assert_streams_equal(whole, derive_ring_streams(slow))

        cap, streams = _chunked(p, per_chunk)
        _assert_streams_equal(whole, streams)
        assert_frame_equal(cap.rings, fast.rings)
        assert_frame_equal(_by_ring(cap.snapshots), _by_ring(fast.snapshots))
        assert_frame_equal(cap.xenstore, fast.xenstore)
        assert cap.warnings == fast.warnings
        assert sorted(cap.pages) == sorted(fast.pages)
        for k in fast.pages:
            assert np.array_equal(cap.pages[k], fast.pages[k])


def test_long_regular_run_uses_one_strided_view_and_derives_every_index(tmp_path: Path) -> None:
    p = tmp_path / "c.pcapng"
    r = RingPage("x86_64-abi", 0)
    n = 3000
    with RingcapWriter(p) as w:
        i = w.add_ring(1, 51712)
        for k in range(n):
            r.put_request(k, operation=1, id=k, segments=[(5, 0, 7)])
            r.req_prod = k + 1
            if k:
                r.put_response(k - 1, id=k - 1, operation=1, status=0)
                r.rsp_prod = k
            w.write_snapshot(i, k * 1000, r.to_bytes(), tsc=7 * k)
    cap = read_ringcap(p)
    pages = cap.pages[(1, 51712, 0)]
    assert pages.base is not None and not pages.flags.writeable  # a view, not a copy
    assert cap.snapshots["tsc"].to_list() == [7 * k for k in range(n)]
    assert cap.snapshots["ns"].to_list() == [1000 * k for k in range(n)]
    streams = derive_ring_streams_chunked(iter_ringcap_chunks(p, snapshots_per_chunk=257))
    assert streams.requests["idx"].to_list() == list(range(n))
    assert streams.requests["id"].to_list() == list(range(n))
    assert streams.responses["idx"].to_list() == list(range(n - 1))
    _assert_streams_equal(streams, derive_ring_streams(cap))


def test_chunk_memory_is_one_window(tmp_path: Path) -> None:
    """Each chunk's pages view its own stretch of the file, not one map of all of it."""
    p = tmp_path / "c.pcapng"
    r = RingPage("x86_64-abi", 0)
    with RingcapWriter(p) as w:
        i = w.add_ring(1, 51712)
        for k in range(600):
            r.req_prod = r.rsp_prod = k
            w.write_snapshot(i, k, r.to_bytes(), tsc=k)
    size = p.stat().st_size
    chunks = list(iter_ringcap_chunks(p, snapshots_per_chunk=100))
    assert [c.snapshots.height for c in chunks] == [100] * 6
    assert [c.snapshots["snap"][0] for c in chunks] == [0, 100, 200, 300, 400, 500]
    for c in chunks:
        window: Any = c.pages[(1, 51712, 0)]
        while getattr(window, "base", None) is not None:
            window = window.base
        assert len(memoryview(window)) < size / 3  # the mapping under the view


def test_odd_time_resolution_and_options_take_the_block_walk(tmp_path: Path) -> None:
    """Microsecond timestamps, and a packet with an extra option before the tsc comment."""
    p = tmp_path / "c.pcapng"
    page = RingPage("x86_64-abi", 0).to_bytes()
    with RingcapWriter(p) as w:
        # an interface declared by hand without if_tsresol: pcapng's default microseconds
        body = struct.pack("<HHI", LINKTYPE_USER0, 0, 0)
        for code, val in ((2, b"vbd/1/51712/q0"), (3, b"protocol=x86_64-abi ring-page-order=0")):
            body += struct.pack("<HH", code, len(val)) + val + b"\0" * (-len(val) % 4)
        body += b"\0" * 4
        w._f.write(
            struct.pack("<II", BT_IDB, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
        )
        for k in range(5):
            opt = b"hello!!!"
            tsc = f"tsc={k:020d}".encode()
            opts = struct.pack("<HH", 1, len(opt)) + opt + struct.pack("<HH", 1, len(tsc)) + tsc
            opts += b"\0" * 4
            total = 28 + len(page) + len(opts) + 4
            w._f.write(struct.pack("<IIIIIII", BT_EPB, total, 0, 0, k, len(page), len(page)))
            w._f.write(page + opts + struct.pack("<I", total))
    slow, fast = read_ringcap(p, _vector=False), read_ringcap(p)
    _assert_captures_equal(slow, fast)
    assert fast.snapshots["ns"].to_list() == [0, 1000, 2000, 3000, 4000]
    assert fast.snapshots["tsc"].to_list() == [0, 1, 2, 3, 4]


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    p = tmp_path / "c.pcapng"
    with RingcapWriter(p):
        pass
    with pytest.raises(InputFileError, match="snapshots_per_chunk"):
        list(iter_ringcap_chunks(p, snapshots_per_chunk=0))
    (only,) = list(iter_ringcap_chunks(p))
    assert only.snapshots.height == 0 and only.warnings == []


@pytest.mark.parametrize(("seed", "per_chunk"), [(1, 3), (2, 17), (3, 1000)])
def test_chunked_stream_parts_equal_the_whole_capture(
    tmp_path: Path, seed: int, per_chunk: int
) -> None:
    from blktrace_xen.streams.from_ring import capture_parts, ringcap_parts

    p = tmp_path / "c.pcapng"
    _capture(p, seed, 80)
    cap = read_ringcap(p)
    whole = capture_parts(cap)
    parts, warnings, _agent = ringcap_parts(p, snapshots_per_chunk=per_chunk)
    assert warnings == cap.warnings
    assert list(parts) == list(whole)
    for name, df in whole.items():
        assert_frame_equal(parts[name], df)
    assert whole["snapshots"].height > 0 and whole["requests"].height > 0

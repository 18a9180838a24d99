"""Benchmark: decode >= 1 M order-0 ring snapshots (x86_64-abi), and read a pcapng capture.

Usage: python benchmarks/bench_ring.py [--snapshots 1000000] [--chunk 65536] [--pcapng 100000]

Part 1 streams synthetic snapshots through the vectorised decoder in chunks
(bounded memory: one chunk of pages plus its derived rows): headers, slot
views, request/response decode and pairing. Each snapshot publishes one
request and answers the previous one, so every snapshot yields one full
request and one response. Page generation is not timed.
Part 2 writes a pcapng capture with our writer and times read_ringcap +
derive_ring_streams on it (page cache warm).
Prints GB/s of page data and peak RSS (ru_maxrss).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from blktrace_xen.decode.ring import _derive_one, _RingInput, derive_ring_streams
from blktrace_xen.decode.ringcap import read_ringcap
from blktrace_xen.encode.blkif import RingPage
from blktrace_xen.encode.ringcap import RingcapWriter

PAGE = 4096


def make_chunk(first: int, count: int, template: np.ndarray) -> np.ndarray:
    """Snapshots first..first+count-1: req_prod = k + 1, rsp_prod = k."""
    pages = np.repeat(template[None, :], count, axis=0)
    k = np.arange(first, first + count, dtype=np.uint64)
    hdr = pages[:, :16].view("<u4")
    hdr[:, 0] = (k + 1) & 0xFFFFFFFF
    hdr[:, 1] = (k + 2) & 0xFFFFFFFF
    hdr[:, 2] = k & 0xFFFFFFFF
    hdr[:, 3] = (k + 1) & 0xFFFFFFFF
    slots = pages[:, 64 : 64 + 32 * 112].reshape(count, 32, 112)
    rows = np.arange(count)
    # the new request k (full) and the response to request k-1 in its slot
    req = slots[rows, (k % 32).astype(np.intp)]
    req[:, 8:16] = (k * 7)[:, None].view(np.uint8).reshape(count, 8)
    req[:, 16:24] = (k * 8)[:, None].view(np.uint8).reshape(count, 8)
    rsp = slots[rows, ((k - 1) % 32).astype(np.intp)]
    rsp[:, 0:8] = ((k - 1) * 7)[:, None].view(np.uint8).reshape(count, 8)
    rsp[:, 8] = 1
    slots[rows, (k % 32).astype(np.intp)] = req
    slots[rows, ((k - 1) % 32).astype(np.intp)] = rsp
    return pages


def bench_decode(n: int, chunk: int) -> None:
    r = RingPage("x86_64-abi", 0)
    for s in range(32):
        r.put_request(s, operation=1, id=0, segments=[(5, 0, 7)])
    template = np.frombuffer(r.to_bytes(), dtype=np.uint8)
    t_dec = 0.0
    nreq = nrsp = 0
    warnings: list[str] = []
    for first in range(1, n + 1, chunk):
        count = min(chunk, n + 1 - first)
        # one snapshot of overlap so a chunk continues where the last ended
        pages = make_chunk(first - 1, count + 1, template)
        ns = np.arange(first - 1, first + count, dtype=np.int64) * 3_000_000
        ring = _RingInput(
            key=(1, 51712, 0),
            abi="x86_64-abi",
            nr_ents=32,
            ns=ns,
            tsc=np.zeros(len(ns), np.uint64),
            tsc_valid=np.zeros(len(ns), bool),
            pages=pages,
        )
        t0 = time.perf_counter()
        out = _derive_one(ring, warnings)
        t_dec += time.perf_counter() - t0
        # the overlap snapshot re-shows the one outstanding request: count it once
        nreq += out["requests"].height - (1 if first > 1 else 0)
        nrsp += out["responses"].height
    gb = n * PAGE / 1e9
    print(
        f"decode: {n} snapshots, {gb:.2f} GB of page data in {t_dec:.2f} s = "
        f"{gb / t_dec:.2f} GB/s, {n / t_dec / 1e6:.2f} M snapshots/s; "
        f"{nreq} requests, {nrsp} responses, chunk {chunk}"
    )


def bench_pcapng(n: int) -> None:
    r = RingPage("x86_64-abi", 0)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "bench.pcapng"
        t0 = time.perf_counter()
        with RingcapWriter(p) as w:
            i = w.add_ring(1, 51712)
            for k in range(n):
                r.put_request(k, operation=1, id=k, segments=[(5, 0, 7)])
                r.req_prod = k + 1
                if k:
                    r.put_response(k - 1, id=k - 1, operation=1, status=0)
                    r.rsp_prod = k
                w.write_snapshot(i, k * 3_000_000, r.to_bytes(), tsc=k)
        t_w = time.perf_counter() - t0
        t0 = time.perf_counter()
        cap = read_ringcap(p)
        t_r = time.perf_counter() - t0
        t0 = time.perf_counter()
        st = derive_ring_streams(cap)
        t_d = time.perf_counter() - t0
        gb = n * PAGE / 1e9
        print(
            f"pcapng: {n} snapshots ({p.stat().st_size / 1e9:.2f} GB file): write {t_w:.2f} s, "
            f"read_ringcap {t_r:.2f} s = {gb / t_r:.2f} GB/s, derive {t_d:.2f} s = "
            f"{gb / t_d:.2f} GB/s; {st.requests.height} requests"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapshots", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--pcapng", type=int, default=100_000)
    a = ap.parse_args()
    bench_decode(a.snapshots, a.chunk)
    if a.pcapng:
        bench_pcapng(a.pcapng)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()

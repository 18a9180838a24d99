"""Benchmark: the whole rule catalogue plus btt_table over N requests (default 10 M).

Frames are generated vectorised with numpy: 64 rings, ids recycled from 32
per ring, latencies of 0.2-2 ms (so completions reorder), 1 % reads, one
snapshot per 64 requests per ring. Reports wall time of generation (not
counted), run_rules and btt_table; run under ``/usr/bin/time -v`` for peak RSS:

    /usr/bin/time -v python benchmarks/bench_analyses.py --requests 10000000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from blktrace_xen import schema
from blktrace_xen.analyses import btt_table, run_rules, summarize
from blktrace_xen.streams import Streams

RINGS = 64
IDS = 32


def generate(n: int, seed: int = 1) -> Streams:
    rng = np.random.default_rng(seed)
    ring = np.arange(n) % RINGS
    seq = np.arange(n) // RINGS  # request number within its ring
    req_ns = np.arange(n, dtype=np.int64) * 100 + rng.integers(0, 50, n)
    # one id per request, recycled: id k is reused every IDS requests of the ring,
    # and each request completes before its id comes round again (IDS * RINGS * 100 ns later)
    lat = rng.integers(200_000, 2_000_000, n)
    req_ns = seq * (IDS * 2_100_000 // IDS) + ring * 10
    rsp_ns = req_ns + lat
    ids = (seq % IDS).astype(np.uint64)
    op = np.where(rng.random(n) < 0.01, 0, 1).astype(np.uint8)
    base = {
        "domid": (1 + ring // 4).astype(np.uint16),
        "vdev": (51712 + 16 * (ring % 4)).astype(np.uint32),
        "queue": np.zeros(n, np.uint16),
        "session": np.zeros(n, np.uint32),
        "id": ids,
        "operation": op,
    }
    sector = (rng.integers(0, 1 << 24, n) * 8).astype(np.uint64)
    order = np.argsort(req_ns, kind="stable")
    requests = pl.DataFrame(
        {
            **base,
            "ns": req_ns,
            "idx": seq.astype(np.uint32),
            "nr_segments": np.ones(n, np.uint16),
            "sector_number": sector,
            "nr_sectors": np.full(n, 8, np.uint64),
        }
    )[order].with_columns(pl.lit("full").alias("seen"), pl.lit("synth").alias("source"))
    rsp_order = np.argsort(rsp_ns, kind="stable")
    # responses take ring indices in completion order per ring
    rsp_idx = np.empty(n, np.uint32)
    ring_sorted = ring[rsp_order]
    counts = np.zeros(RINGS, np.int64)
    # vectorised per-ring rank: stable sort by ring of the completion order
    by_ring = np.argsort(ring_sorted, kind="stable")
    rank = np.empty(n, np.int64)
    starts = np.searchsorted(ring_sorted[by_ring], np.arange(RINGS))
    rank[by_ring] = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    rsp_idx[rsp_order] = rank.astype(np.uint32)
    del counts
    responses = pl.DataFrame(
        {
            **base,
            "ns": rsp_ns,
            "idx": rsp_idx,
            "status": np.zeros(n, np.int16),
            "pad_nonzero": np.zeros(n, bool),
        }
    )[rsp_order].with_columns(pl.lit("synth").alias("source"))
    reorder = rsp_idx.astype(np.int64) - seq
    io = pl.DataFrame(
        {
            **base,
            "req_idx": seq.astype(np.uint32),
            "rsp_idx": rsp_idx,
            "req_ns": req_ns,
            "rsp_ns": rsp_ns,
            "latency_ns": lat,
            "status": np.zeros(n, np.int16),
            "sector_number": sector,
            "nr_sectors": np.full(n, 8, np.uint64),
            "reorder": reorder,
        }
    )[order].with_columns(pl.lit("full").alias("seen"), pl.lit("completed").alias("outcome"))
    snap_rows = order[::64]
    snapshots = pl.DataFrame(
        {
            "domid": base["domid"][snap_rows],
            "vdev": base["vdev"][snap_rows],
            "queue": base["queue"][snap_rows],
            "snap": np.arange(len(snap_rows), dtype=np.uint32),
            "ns": req_ns[snap_rows],
            "req_prod": (seq[snap_rows] + 1).astype(np.uint32),
            "rsp_prod": (seq[snap_rows] + 1).astype(np.uint32),
            "req_event": (seq[snap_rows] + 2).astype(np.uint32),
            "rsp_event": (seq[snap_rows] + 2).astype(np.uint32),
            "nr_ents": np.full(len(snap_rows), 32, np.uint16),
        }
    )
    return Streams(
        requests=schema.conform(requests, "requests"),
        responses=schema.conform(responses, "responses"),
        io=schema.conform(io, "io"),
        snapshots=schema.conform(snapshots, "snapshots"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=10_000_000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    streams = generate(args.requests)
    t1 = time.perf_counter()
    findings = run_rules(streams)
    t2 = time.perf_counter()
    table = btt_table(streams)
    t3 = time.perf_counter()
    print(
        f"requests={streams.requests.height} responses={streams.responses.height} "
        f"snapshots={streams.snapshots.height}"
    )
    print(
        f"generate {t1 - t0:.2f} s; run_rules {t2 - t1:.2f} s; btt_table {t3 - t2:.2f} s; "
        f"analyses total {t3 - t1:.2f} s"
    )
    print(
        f"findings {summarize(findings)['by_rule']}; btt rows {table.height}, "
        f"count {table['count'].sum()}"
    )


if __name__ == "__main__":
    main()

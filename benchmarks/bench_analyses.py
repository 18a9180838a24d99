"""Benchmark: the whole rule catalogue plus btt_table over N requests (default 10 M).

Frames are generated vectorised with numpy: 64 rings, ids recycled from 32
per ring, latencies of 0.2-2 ms, requests 2.1 ms apart on a ring (so by
default no ring completes out of order: ``--spacing-ns 500000`` makes them
reorder), 1 % reads, one snapshot per 64 requests per ring. Reports wall time of generation (not
counted) and of the analyses: ``analyze`` (run_rules and btt_table sharing
what both derive, as the CLI runs them), or with ``--separate`` the two
calls alone and each timed; run under ``/usr/bin/time -v`` for peak RSS:

    /usr/bin/time -v python benchmarks/bench_analyses.py --requests 10000000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from blktrace_xen import schema
from blktrace_xen.analyses import analyze, btt_table, run_rules, summarize
from blktrace_xen.streams import Streams

RINGS = 64
IDS = 32
SPACING_NS = 2_100_000  # between requests of a ring: the first version's figure


def generate(n: int, seed: int = 1, spacing_ns: int = SPACING_NS) -> Streams:
    """The input, built one frame at a time so the generator's own peak stays near the result's.

    The frames are those of the first version of this benchmark (same draws):
    requests are generated already in time order, so they need no reordering.
    ``spacing_ns`` apart on a ring (the default is longer than every latency,
    so no ring completes out of issue order; below 2 ms completions reorder).
    """
    rng = np.random.default_rng(seed)
    ring = np.arange(n) % RINGS
    seq = np.arange(n) // RINGS  # request number within its ring
    rng.integers(0, 50, n)  # an unused draw, kept so the data match earlier runs
    # one id per request, recycled: id k is reused every IDS requests of the ring,
    # and each request completes before its id comes round again (IDS * RINGS * 100 ns later)
    lat = rng.integers(200_000, 2_000_000, n)
    # increasing in (seq, ring), i.e. in row order: the requests are in time order
    req_ns = seq * spacing_ns + ring * 10
    rsp_ns = req_ns + lat
    op = np.where(rng.random(n) < 0.01, 0, 1).astype(np.uint8)
    sector = (rng.integers(0, 1 << 24, n) * 8).astype(np.uint64)

    def base(rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        def take(a: np.ndarray) -> np.ndarray:
            return a if rows is None else a[rows]

        r = take(ring)
        return {
            "domid": (1 + r // 4).astype(np.uint16),
            "vdev": (51712 + 16 * (r % 4)).astype(np.uint32),
            "queue": np.zeros(len(r), np.uint16),
            "session": np.zeros(len(r), np.uint32),
            "id": (take(seq) % IDS).astype(np.uint64),
            "operation": take(op),
        }

    def enum(table: str, column: str, value: str, height: int) -> pl.Series:
        dtype = schema.empty(table).schema[column]
        return pl.Series(column, [value], dtype=dtype).new_from_index(0, height)

    requests = schema.conform(
        pl.DataFrame(
            {
                **base(),
                "ns": req_ns,
                "idx": seq.astype(np.uint32),
                "nr_segments": np.ones(n, np.uint16),
                "sector_number": sector,
                "nr_sectors": np.full(n, 8, np.uint64),
            }
        ).with_columns(enum("requests", "seen", "full", n), enum("requests", "source", "synth", n)),
        "requests",
    )
    rsp_order = np.argsort(rsp_ns, kind="stable")
    # responses take ring indices in completion order per ring
    ring_sorted = ring[rsp_order]
    by_ring = np.argsort(ring_sorted, kind="stable")
    starts = np.searchsorted(ring_sorted[by_ring], np.arange(RINGS))
    rank = np.empty(n, np.int64)
    rank[by_ring] = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    del ring_sorted, by_ring
    rsp_idx = np.empty(n, np.uint32)
    rsp_idx[rsp_order] = rank.astype(np.uint32)
    del rank
    responses = schema.conform(
        pl.DataFrame(
            {
                **base(rsp_order),
                "ns": rsp_ns[rsp_order],
                "idx": rsp_idx[rsp_order],
                "status": np.zeros(n, np.int16),
                "pad_nonzero": np.zeros(n, bool),
            }
        ).with_columns(enum("responses", "source", "synth", n)),
        "responses",
    )
    del rsp_order
    io = schema.conform(
        pl.DataFrame(
            {
                **base(),
                "req_idx": seq.astype(np.uint32),
                "rsp_idx": rsp_idx,
                "req_ns": req_ns,
                "rsp_ns": rsp_ns,
                "latency_ns": lat,
                "status": np.zeros(n, np.int16),
                "sector_number": sector,
                "nr_sectors": np.full(n, 8, np.uint64),
                "reorder": rsp_idx.astype(np.int64) - seq,
            }
        ).with_columns(enum("io", "seen", "full", n), pl.lit("completed").alias("outcome")),
        "io",
    )
    snap_rows = np.arange(0, n, 64)
    snapshots = pl.DataFrame(
        {
            "domid": (1 + ring[snap_rows] // 4).astype(np.uint16),
            "vdev": (51712 + 16 * (ring[snap_rows] % 4)).astype(np.uint32),
            "queue": np.zeros(len(snap_rows), np.uint16),
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
        requests=requests,
        responses=responses,
        io=io,
        snapshots=schema.conform(snapshots, "snapshots"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=10_000_000)
    ap.add_argument("--spacing-ns", type=int, default=SPACING_NS)
    ap.add_argument(
        "--separate", action="store_true", help="run_rules then btt_table, each alone and timed"
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    streams = generate(args.requests, spacing_ns=args.spacing_ns)
    t1, c1 = time.perf_counter(), time.process_time()
    if args.separate:
        findings = run_rules(streams)
        t2, c2 = time.perf_counter(), time.process_time()
        table = btt_table(streams)
    else:
        findings, table = analyze(streams)
        t2, c2 = t1, c1
    t3, c3 = time.perf_counter(), time.process_time()
    print(
        f"requests={streams.requests.height} responses={streams.responses.height} "
        f"snapshots={streams.snapshots.height}"
    )
    # CPU time (all threads) tells more than wall time when other jobs share the cores.
    if args.separate:
        print(
            f"generate {t1 - t0:.2f} s; run_rules {t2 - t1:.2f} s; btt_table {t3 - t2:.2f} s; "
            f"analyses total {t3 - t1:.2f} s"
        )
        print(
            f"cpu: run_rules {c2 - c1:.2f} s; btt_table {c3 - c2:.2f} s; analyses {c3 - c1:.2f} s"
        )
    else:
        print(f"generate {t1 - t0:.2f} s; analyze: analyses total {t3 - t1:.2f} s")
        print(f"cpu: analyses {c3 - c1:.2f} s")
    print(
        f"findings {summarize(findings)['by_rule']}; btt rows {table.height}, "
        f"count {table['count'].sum()}"
    )


if __name__ == "__main__":
    main()

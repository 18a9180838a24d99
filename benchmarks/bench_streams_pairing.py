"""Time pairing (sessions + window pairing) on a synthetic stream of N requests.

Usage: python benchmarks/bench_streams_pairing.py [N=1000000] [RINGS=64]
Ids come from a LIFO pool of 32 per ring (as blkfront reuses them), responses
arrive 1-3 requests later (out of order), a few timestamps are shared.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import polars as pl

from blktrace_xen import schema
from blktrace_xen.streams.assemble import assemble


def frames(n: int, rings: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(1)
    ring = rng.integers(0, rings, n)
    ns = np.sort(rng.integers(0, n * 10, n))
    # per ring, id = occurrence mod 32 keeps ids unique among <= 32 in flight
    occ = (
        pl.DataFrame({"r": ring})
        .with_columns(pl.int_range(pl.len()).over("r").alias("o"))["o"]
        .to_numpy()
    )
    ids = occ % 32
    lag = rng.integers(1, 4, n) * 5
    req = pl.DataFrame(
        {
            "domid": ring + 1,
            "vdev": 51712,
            "queue": 0,
            "ns": ns,
            "idx": occ,
            "id": ids,
            "operation": ids % 2,
            "seen": "full",
            "source": "synth",
        }
    )
    rsp = pl.DataFrame(
        {
            "domid": ring + 1,
            "vdev": 51712,
            "queue": 0,
            "ns": ns + lag,
            "idx": occ,
            "id": ids,
            "operation": ids % 2,
            "status": 0,
            "source": "synth",
        }
    )
    return schema.conform(req, "requests"), schema.conform(rsp.sort("ns"), "responses")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rings = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    req, rsp = frames(n, rings)
    t = time.perf_counter()
    s = assemble(requests=req, responses=rsp, control=schema.empty("control"), meta={})
    dt = time.perf_counter() - t
    print(
        f"{n} requests + {rsp.height} responses on {rings} rings: assemble {dt:.2f} s "
        f"({2 * n / dt / 1e6:.2f} M rows/s); io {s.io.height}, pairing facts {s.pairing.height}"
    )


if __name__ == "__main__":
    main()

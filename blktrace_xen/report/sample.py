"""Synthetic, analysed-looking Streams for exercising the report at any size.

The report's tests, its browser test, the screenshot in docs/img and the
10 M-event benchmark need inputs of a chosen size with every part of the
report populated (several rings and sessions, snapshots, control events, lost
records, findings with evidence). Decoding real traces is another module's
job; this builds the frames directly, deterministically from a seed, in the
schemas of :mod:`blktrace_xen.schema`. The findings use ``sample.*`` rule ids
so they can never be mistaken for a real analysis.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from blktrace_xen import schema
from blktrace_xen.streams import Streams

NR_ENTS = 32


def _ring_io(
    rng: np.random.Generator, n: int, key: tuple[int, int, int], t_start: int
) -> pl.DataFrame:
    domid, vdev, queue = key
    gaps = rng.exponential(20_000.0, n).astype(np.int64) + 1_000
    req_ns = t_start + np.cumsum(gaps)
    latency = rng.lognormal(mean=11.0, sigma=0.8, size=n).astype(np.int64)
    # A slow episode in the middle of the ring's life: what a stall looks like.
    mid = slice(n // 2, n // 2 + max(1, n // 50))
    latency[mid] *= 4
    ops = rng.choice(np.array([0, 1, 3], dtype=np.uint8), size=n, p=[0.6, 0.35, 0.05])
    status = np.zeros(n, dtype=np.int16)
    status[rng.random(n) < 0.001] = -1
    # blkif allows at most nr_ents requests in flight, and ids are reused only
    # after their response: request i may go only once request i - NR_ENTS is
    # answered, so it can take that request's id.
    rsp_ns = req_ns + latency
    for start in range(NR_ENTS, n, NR_ENTS):
        block = slice(start, min(n, start + NR_ENTS))
        prev = rsp_ns[start - NR_ENTS : start - NR_ENTS + (block.stop - start)]
        req_ns[block] = np.maximum(req_ns[block], prev + 1)
        rsp_ns[block] = req_ns[block] + latency[block]
    answered = np.ones(n, dtype=bool)
    answered[-min(3, n) :] = False  # the last few are still in flight at trace end
    ids = (np.arange(n) % NR_ENTS).astype(np.uint64)
    session = (np.arange(n) >= (n * 3) // 4).astype(np.uint32)  # one suspend/resume
    order = np.argsort(np.where(answered, rsp_ns, np.iinfo(np.int64).max), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return pl.DataFrame(
        {
            "domid": np.full(n, domid, dtype=np.uint16),
            "vdev": np.full(n, vdev, dtype=np.uint32),
            "queue": np.full(n, queue, dtype=np.uint16),
            "session": session,
            "id": ids,
            "operation": ops,
            "req_idx": np.arange(n, dtype=np.uint32),
            "rsp_idx": np.where(answered, rank, 0).astype(np.uint32),
            "req_ns": req_ns,
            "rsp_ns": pl.Series(rsp_ns).set(pl.Series(~answered), None),
            "latency_ns": pl.Series(latency).set(pl.Series(~answered), None),
            "status": pl.Series(status).set(pl.Series(~answered), None),
            "sector_number": rng.integers(0, 1 << 24, n, dtype=np.uint64),
            "nr_sectors": np.full(n, 8, dtype=np.uint64),
            "seen": np.full(n, "full"),
            "reorder": rank - np.arange(n),
            "outcome": np.where(answered, "completed", "trace_end"),
        }
    )


def sample_streams(
    n_events: int = 20_000, *, n_rings: int = 3, seed: int = 0
) -> tuple[Streams, pl.DataFrame]:
    """Streams with about ``n_events`` request + response events, and findings.

    Returns ``(streams, findings)``; both are deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    per_ring = max(4, n_events // (2 * n_rings))
    keys = [(1 + r // 2, 51712 + 16 * (r % 2), 0) for r in range(n_rings)]
    ios = [_ring_io(rng, per_ring, k, 1_000_000 * i) for i, k in enumerate(keys)]
    io = schema.conform(pl.concat(ios), "io")
    requests = schema.conform(
        io.select(
            *schema.RING_KEY,
            "session",
            pl.col("req_ns").alias("ns"),
            pl.col("req_idx").alias("idx"),
            "id",
            "operation",
            pl.lit(1, pl.UInt16).alias("nr_segments"),
            "sector_number",
            "nr_sectors",
            "seen",
            pl.lit("synth").alias("source"),
        ),
        "requests",
    )
    responses = schema.conform(
        io.filter(pl.col("rsp_ns").is_not_null()).select(
            *schema.RING_KEY,
            "session",
            pl.col("rsp_ns").alias("ns"),
            pl.col("rsp_idx").alias("idx"),
            "id",
            "operation",
            "status",
            pl.lit(False).alias("pad_nonzero"),
            pl.lit("synth").alias("source"),
        ),
        "responses",
    )
    snapshots = _snapshots(io)
    control = _control(io, keys)
    span = (int(io["req_ns"].min()), int(io["rsp_ns"].max()))  # type: ignore[arg-type]
    lost = schema.conform(
        pl.DataFrame(
            {
                "cpu": [1],
                "ns": [span[0] + (span[1] - span[0]) // 3],
                "first_ns": [span[0] + (span[1] - span[0]) // 3 - 50_000],
                "count": [117],
                "domid": [keys[0][0]],
                "vcpu": [0],
            }
        ),
        "lost",
    )
    rings = schema.conform(
        pl.DataFrame(
            {
                "domid": [k[0] for k in keys],
                "vdev": [k[1] for k in keys],
                "queue": [k[2] for k in keys],
                "abi": ["x86_64-abi"] * len(keys),
                "ring_page_order": [0] * len(keys),
                "nr_ents": [NR_ENTS] * len(keys),
                "backend_domid": [0] * len(keys),
            }
        ),
        "rings",
    )
    streams = Streams(
        requests=requests,
        responses=responses,
        control=control,
        io=io,
        snapshots=snapshots,
        rings=rings,
        lost=lost,
        meta={
            "inputs": [
                {"path": "sample/trace.bin", "sha256": "0" * 64, "kind": "xentrace"},
                {"path": "sample/ring.pcapng", "sha256": "f" * 64, "kind": "ringcap"},
            ],
            "cpu_mhz": 2400.0,
            "cpu_mhz_default": True,
            "t0_tsc": 0,
        },
    )
    return streams, _findings(io, control)


def _snapshots(io: pl.DataFrame) -> pl.DataFrame:
    """A snapshot after every 8th request: producers counted from the io rows."""
    events = (
        pl.concat(
            [
                io.select(
                    *schema.RING_KEY,
                    pl.col("req_ns").alias("ns"),
                    pl.lit(1).alias("r"),
                    pl.lit(0).alias("s"),
                ),
                io.filter(pl.col("rsp_ns").is_not_null()).select(
                    *schema.RING_KEY,
                    pl.col("rsp_ns").alias("ns"),
                    pl.lit(0).alias("r"),
                    pl.lit(1).alias("s"),
                ),
            ]
        )
        .sort("ns", maintain_order=True)
        .with_columns(
            pl.col("r").cum_sum().over(schema.RING_KEY).alias("req_prod"),
            pl.col("s").cum_sum().over(schema.RING_KEY).alias("rsp_prod"),
            pl.int_range(pl.len()).over(schema.RING_KEY).alias("_k"),
        )
        .filter(pl.col("_k") % 8 == 7)
        .with_columns(
            pl.int_range(pl.len()).over(schema.RING_KEY).alias("snap"),
            pl.col("req_prod").alias("req_event"),
            pl.col("rsp_prod").alias("rsp_event"),
            pl.lit(NR_ENTS).alias("nr_ents"),
        )
    )
    return schema.conform(events, "snapshots")


def _control(io: pl.DataFrame, keys: list[tuple[int, int, int]]) -> pl.DataFrame:
    rows: list[tuple[int, int | None, int | None, int, str, str, int | None, str | None]] = []
    for d, v, q in keys:
        ring = io.filter((pl.col("domid") == d) & (pl.col("vdev") == v))
        first = int(ring["req_ns"].min())  # type: ignore[arg-type]
        resume = int(ring.filter(pl.col("session") == 1)["req_ns"].min())  # type: ignore[arg-type]
        rows += [
            (d, v, q, first - 500_000, "connect", "back", 4, "state=Connected"),
            (d, v, q, resume - 200_000, "suspend", "toolstack", None, None),
            (d, v, q, resume - 100_000, "resume", "toolstack", None, None),
        ]
    last = int(io["rsp_ns"].max())  # type: ignore[arg-type]
    d0 = keys[0][0]
    rows.append((d0, None, None, last + 1_000, "domain_destroy", "hypervisor", None, None))
    return schema.conform(
        pl.DataFrame(
            rows,
            schema=["domid", "vdev", "queue", "ns", "kind", "side", "value", "detail"],
            orient="row",
        ).with_columns(pl.lit("synth").alias("source")),
        "control",
    )


def _findings(io: pl.DataFrame, control: pl.DataFrame) -> pl.DataFrame:
    slow = io.filter(pl.col("latency_ns") > pl.col("latency_ns").quantile(0.999))
    stalls = slow.group_by(schema.RING_KEY).agg(
        pl.col("session").first(),
        pl.col("req_ns").min().alias("ns"),
        pl.col("rsp_ns").max().alias("ns_end"),
        pl.len().alias("n"),
        pl.col("latency_ns").max().alias("worst"),
    )
    rows = [
        {
            "rule": "sample.stall",
            "severity": "medium",
            "domid": r["domid"],
            "vdev": r["vdev"],
            "queue": r["queue"],
            "session": r["session"],
            "ns": r["ns"],
            "ns_end": r["ns_end"],
            "message": f"{r['n']} requests took over the p99.9 latency (worst {r['worst']} ns)",
            "evidence": json.dumps({"slow_requests": r["n"], "worst_latency_ns": r["worst"]}),
            "confidence": 1.0,
        }
        for r in stalls.sort(schema.RING_KEY).iter_rows(named=True)
    ]
    leaked = io.filter(pl.col("rsp_ns").is_null())
    destroy = control.filter(pl.col("kind") == "domain_destroy")
    destroy_ns = int(destroy["ns"][0]) if destroy.height else None
    for r in leaked.iter_rows(named=True):
        rows.append(
            {
                "rule": "sample.never_completed",
                "severity": "high",
                "domid": r["domid"],
                "vdev": r["vdev"],
                "queue": r["queue"],
                "session": r["session"],
                "ns": r["req_ns"],
                "ns_end": destroy_ns,
                "id": r["id"],
                "idx": r["req_idx"],
                "message": f"request id {r['id']} was never answered before the domain died",
                "evidence": json.dumps(
                    {
                        "id": r["id"],
                        "operation": r["operation"],
                        "sector_number": r["sector_number"],
                        "requests": [
                            {"event": "pushed", "ns": r["req_ns"], "idx": r["req_idx"]},
                            {"event": "domain_destroy", "ns": destroy_ns, "idx": None},
                        ],
                    }
                ),
                "confidence": 0.9,
            }
        )
    if not rows:
        return schema.empty("findings")
    return schema.conform(pl.DataFrame(rows, infer_schema_length=None), "findings")

"""Check that run_rules and btt_table give the same results as a saved baseline.

The inputs: every synth scenario x legacy/patched x dump/capture/both (small),
random streams built with tests/frames.py (pending requests, re-issues,
answers in another session, duplicate responses, timestamp ties, index
regressions, implausible producers, snapshots on some rings, control events),
and the bench_analyses input at 20 k requests. Save a baseline from the tree
before a change, then compare after it. The baseline keeps the inputs too
(pickled Streams), so a change in the loaders or the synthesizer between the
two runs does not show up as a difference in the analyses:

    python benchmarks/check_analyses_identical.py save /tmp/analyses-baseline
    python benchmarks/check_analyses_identical.py compare /tmp/analyses-baseline

Compare runs every input three times: as is; with the batch sizes of the
batched passes cut to a few rows and analyses/rings.py's packed search, so
those paths are exercised at this size; and with rings.py off, so the polars
formulation kept for inputs with nulls is checked too. Each of the three
runs both ways: run_rules and btt_table called alone, and ``analyze`` (one
call sharing what both derive).
Keep the baseline outside the repository. Exit status 1 names every input whose
findings or btt table differ.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.frames

from bench_analyses import generate

from blktrace_xen.analyses import analyze, batches, btt_table, rings, run_rules
from blktrace_xen.streams import Streams
from blktrace_xen.streams.load import load_streams
from blktrace_xen.synth.scenarios import SCENARIOS, synthesize
from tests import frames

RANDOM_STREAMS = 16


def _scenario_inputs(work: Path) -> Iterator[tuple[str, Streams]]:
    for name, scen in SCENARIOS.items():
        for which, logic in (("legacy", scen.logic), ("patched", scen.patched)):
            if which == "patched" and scen.seed is None:
                continue
            out = work / f"{name}-{which}"
            synthesize(name, out, seed=1, duration_s=0.2, iops=2000, logic=logic)
            trace = out / "trace.xentrace"
            caps = sorted(out.glob("ring*.pcapng"))
            for source, paths in (("trace", [trace]), ("capture", caps), ("both", [trace, *caps])):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    yield f"{name}-{which}-{source}", load_streams(paths)


def _random_streams(seed: int) -> Streams:
    """Several rings and sessions with the irregularities the rules look for."""
    rng = np.random.default_rng(seed)
    reqs: list[dict[str, Any]] = []
    rsps: list[dict[str, Any]] = []
    control: list[dict[str, Any]] = []
    snaps: list[dict[str, Any]] = []
    for r in range(int(rng.integers(1, 5))):
        ring = {"domid": 1 + r // 2, "vdev": 51712 + 16 * (r % 2), "queue": 0}
        idx = int(rng.integers(0, 3)) * (2**32 - 40)  # sometimes near the u32 wrap
        t = int(rng.integers(0, 1000))
        session = 0
        for _ in range(int(rng.integers(5, 120))):
            t += int(rng.integers(0, 3)) * 1000  # timestamp ties
            if rng.random() < 0.03:
                session += 1
                control.append({**ring, "ns": t, "kind": "disconnect_done"})
                control.append({**ring, "ns": t + 1, "kind": "connect"})
                t += 2
            if rng.random() < 0.03:
                idx -= int(rng.integers(1, 40))  # a regression
            if rng.random() < 0.02:
                idx += int(rng.integers(40, 2000))  # an implausible producer
            rid = int(rng.integers(0, 8))
            op = int(rng.choice([0, 1, 1, 1, 2, 3, 9]))
            sector = int(rng.integers(0, 16)) * 8
            reqs.append(
                {
                    **ring,
                    "session": session,
                    "ns": t,
                    "idx": idx % 2**32,
                    "id": rid,
                    "operation": op,
                    "sector_number": sector,
                    "nr_segments": int(rng.integers(0, 13)),
                }
            )
            idx += 1
            lat = int(rng.integers(0, 20)) * 500
            answered = rng.random()
            if answered < 0.9:
                rsp_session = session + (1 if rng.random() < 0.05 else 0)
                row = {
                    **ring,
                    "session": rsp_session,
                    "ns": t + lat,
                    "idx": (idx - 1 + int(rng.integers(-1, 2))) % 2**32,
                    "id": rid,
                    "operation": op,
                    "status": int(rng.choice([0, 0, 0, -1, -2])),
                }
                rsps.append(row)
                if rng.random() < 0.03:
                    rsps.append({**row, "ns": row["ns"] + 1})  # a duplicate
            if r == 0 and rng.random() < 0.2:
                snaps.append(
                    {
                        **ring,
                        "ns": t,
                        "req_prod": idx % 2**32,
                        "rsp_prod": (idx - int(rng.integers(0, 40))) % 2**32,
                        "nr_ents": 32,
                    }
                )
        if rng.random() < 0.3:
            control.append({**ring, "ns": t + 5000, "kind": "domain_destroy", "vdev": None})
    rsps.sort(key=lambda row: row["ns"])
    tables: dict[str, Any] = {"control": sorted(control, key=lambda row: row["ns"])}
    if snaps:
        tables["snapshots"] = snaps
    return frames.streams(requests=reqs, responses=rsps, **tables)


def _inputs(work: Path) -> Iterator[tuple[str, Streams]]:
    yield from _scenario_inputs(work)
    for seed in range(RANDOM_STREAMS):
        yield f"random-{seed}", _random_streams(seed)
    yield "bench-20k", generate(20_000)


def _saved_or_new(mode: str, baseline: Path, work: Path) -> Iterator[tuple[str, Streams]]:
    if mode == "save":
        for name, streams in _inputs(work):
            (baseline / f"{name}.streams.pickle").write_bytes(pickle.dumps(streams))
            yield name, streams
        return
    for path in sorted(baseline.glob("*.streams.pickle")):
        # Only this script's own output from a save run is read back.
        streams = pickle.loads(path.read_bytes())
        yield path.name.removesuffix(".streams.pickle"), streams


def _results(streams: Streams, *, together: bool = False) -> dict[str, pl.DataFrame]:
    if together:
        findings, btt = analyze(streams)
        return {"findings": findings, "btt": btt}
    return {"findings": run_rules(streams), "btt": btt_table(streams)}


# How each input is run: as is; with batches of a few rows and the packed
# (group, ns) search of analyses/rings.py instead of its per-group loop; with
# the polars formulation that rings.py replaces where it can (kept for nulls).
MODES = ("", " (small batches, packed search)", " (polars paths)")


@contextmanager
def _mode(mode: str) -> Iterator[None]:
    saved = batches.BATCH_EVENTS, rings.LOOP_GROUPS, rings.ENABLED
    if mode == MODES[1]:
        batches.BATCH_EVENTS = 7
        rings.LOOP_GROUPS = 0
    elif mode == MODES[2]:
        rings.ENABLED = False
    try:
        yield
    finally:
        batches.BATCH_EVENTS, rings.LOOP_GROUPS, rings.ENABLED = saved


def _same_rows(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    cols = [c for c, t in a.schema.items() if not isinstance(t, pl.List)]
    return a.height == b.height and a.sort(cols, nulls_last=True).equals(
        b.sort(cols, nulls_last=True)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=("save", "compare"))
    ap.add_argument("baseline", type=Path)
    args = ap.parse_args()
    args.baseline.mkdir(parents=True, exist_ok=True)
    bad: list[str] = []
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, streams in _saved_or_new(args.mode, args.baseline, Path(tmp)):
            count += 1
            if args.mode == "save":
                for part, frame in _results(streams).items():
                    frame.write_parquet(args.baseline / f"{name}.{part}.parquet")
                continue
            for mode, together in itertools.product(MODES, (False, True)):
                with _mode(mode):
                    results = _results(streams, together=together)
                for part, frame in results.items():
                    path = args.baseline / f"{name}.{part}.parquet"
                    label = f"{name} {part}{mode}{' (analyze)' if together else ''}"
                    saved = pl.read_parquet(path)
                    if frame.schema == saved.schema and frame.equals(saved):
                        continue
                    if frame.schema == saved.schema and _same_rows(frame, saved):
                        # Rows tied on ns come from unordered group_bys in some rules (HEAD too).
                        print(f"same rows, other order of ties: {label}", flush=True)
                        continue
                    bad.append(label)
                    print(f"DIFFERS: {label}", flush=True)
    if args.mode == "save":
        print(f"saved {count} inputs to {args.baseline}")
        return
    print(f"{count} inputs compared; {len(bad)} differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

"""The engine's copies of the machines' common paths give what the machines' methods give.

``run_logic`` runs the frequent inputs (submit, consume, completion, frontend consume) in
its own loop for speed and calls the machine's method for anything unusual;
``inline=False`` calls the methods for every event. Every replay corpus case, and a
damaged copy of each (responses dropped, requests repeated, so the unusual branches run
mid-stream), is replayed both ways under every registered logic, with the disk oracle on
and off: violations, final ring states, disk report, counts and skips must be equal.
"""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import polars as pl
import pytest

from blktrace_xen.model.logic import LOGICS
from blktrace_xen.replay.engine import run_logic
from blktrace_xen.replay.inputs import ReplayInput, build_input
from blktrace_xen.replay.logics import resolve
from blktrace_xen.streams import Streams
from blktrace_xen.streams.assemble import assemble
from blktrace_xen.streams.load import load_streams

REPLAYS = Path(__file__).resolve().parent.parent / "replays"
CASES = sorted(p.parent for p in REPLAYS.glob("*/case.toml"))
PASSED_THROUGH = ("snapshots", "rings", "gaps", "lost", "grants", "mutations")
PAIRS = sorted({(p.backend, p.frontend) for p in map(resolve, LOGICS)})


def _load(case: Path) -> Streams:
    spec = tomllib.loads((case / "case.toml").read_text())["case"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_streams([case / p for p in spec["inputs"]], cpu_mhz=spec.get("cpu_mhz"))


def _damaged(s: Streams) -> Streams:
    """Every 7th response lost and every 11th request seen twice, a few µs later."""
    rsp = s.responses.filter(pl.int_range(pl.len()) % 7 != 3)
    again = s.requests.filter(pl.int_range(pl.len()) % 11 == 5).with_columns(pl.col("ns") + 3_000)
    req = pl.concat([s.requests, again]).sort("ns", maintain_order=True)
    kept = {n: t for n, t in s.tables().items() if n in PASSED_THROUGH}
    return assemble(requests=req, responses=rsp, control=s.control, meta=s.meta, **kept)


def _check(inp: ReplayInput) -> int:
    violations = 0
    for back, front in PAIRS:
        for verify in (True, False):
            fast = run_logic(inp, backend=back, frontend=front, verify_data=verify)
            slow = run_logic(inp, backend=back, frontend=front, verify_data=verify, inline=False)
            assert fast.outcome() == slow.outcome(), (back, front, verify)
            violations += len(fast.result.violations)
    return violations


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_inline_paths_equal_the_machines(case: Path) -> None:
    streams = _load(case)
    _check(build_input(streams))
    _check(build_input(_damaged(streams)))


def test_the_comparison_sees_violations() -> None:
    # Guard against an empty comparison: the seed case does break invariants somewhere.
    assert _check(build_input(_load(REPLAYS / "disconnect-during-io"))) > 0

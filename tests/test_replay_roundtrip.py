"""Round trip: a trace synthesized with logic X, replayed against X, shows exactly the
violations the synthesis recorded (invariant, ring, request id and time).

Two moments leave no trace record, and only there may the time differ: I/O whose
response went into an unmapped ring (replay completes it at the end of the trace and says
so, caveat ``completed-at-end``), and a rebound backend's first look at the ring when it
consumes nothing (replay runs it at the traced bind, so ``backend-halted`` is dated at
the bind, at most ``HALT_SLACK_NS`` before the simulation's wake-up).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from blktrace_xen.replay import replay
from blktrace_xen.streams.load import load_streams
from blktrace_xen.synth.scenarios import SCENARIOS, synthesize

HALT_SLACK_NS = 1_000_000
HALT = "backend-halted"

EXACT = [
    "steady",
    "disconnect-during-io",
    "destroy-during-swap",
    "unbind-rebind-loop",
    "save-restore-during-io",
    "multi-queue",
]
KNOWN_GAPS = {
    "migrate-during-io": "the source's late write has no trace record; replayed at the end it "
    "reads as lost-write where the simulation saw duplicated-write",
    "hostile-frontend": "slot rewrites and a bogus req_prod are page stores, not trace "
    "events: the dump alone misses them (the capture has them, see below)",
    "misbehaving-backend": "the backend thread wake that halts on the bogus rsp_prod left "
    "no record in the dump (the capture's snapshot has it, see below)",
}


def _roundtrip(
    name: str, tmp: Path, *sources: str, seed: int = 1
) -> tuple[Counter[tuple[object, ...]], Counter[tuple[object, ...]], bool]:
    scen = SCENARIOS[name]
    synthesize(name, tmp, seed=seed, duration_s=0.15, iops=2000)
    truth = json.loads((tmp / "truth.json").read_text())
    result = replay(load_streams([tmp / s for s in sources or ("trace.xentrace",)]), [scen.logic])
    lv = result.verdicts[0]
    end = lv.run.end_ns
    want: Counter[tuple[object, ...]] = Counter()
    got: Counter[tuple[object, ...]] = Counter()
    late = {(v.invariant, v.id) for v in lv.violations if v.t_ns == end}
    halts_want = sorted(v["t_ns"] for v in truth["violations"] if v["invariant"] == HALT)
    halts_got = sorted(v.t_ns for v in lv.violations if v.invariant == HALT)
    halts_ok = len(halts_got) == len(halts_want) and all(
        0 <= w - g <= HALT_SLACK_NS for w, g in zip(halts_want, halts_got, strict=True)
    )
    for v in truth["violations"]:
        key = (v["invariant"], tuple(v["ring"]), v["id"])
        t = end if (v["invariant"], v["id"]) in late else v["t_ns"]
        want[(*key, None if v["invariant"] == HALT else t)] += 1
    for v in lv.violations:
        got[(v.invariant, v.ring, v.id, None if v.invariant == HALT else v.t_ns)] += 1
    return want, got, halts_ok


@pytest.mark.parametrize("name", EXACT)
def test_replay_against_the_synthesis_logic_matches_its_truth(name: str, tmp_path: Path) -> None:
    want, got, halts_ok = _roundtrip(name, tmp_path)
    assert got == want
    assert halts_ok


@pytest.mark.parametrize("name", ["unbind-rebind-loop", "steady", "multi-queue"])
def test_ring_capture_alone_round_trips(name: str, tmp_path: Path) -> None:
    """From the pcapng capture only: control read from xenstore, consumes inferred."""
    want, got, halts_ok = _roundtrip(name, tmp_path, "ring.pcapng")
    assert got == want
    assert halts_ok


@pytest.mark.parametrize("name", ["disconnect-during-io", "destroy-during-swap"])
def test_ring_capture_alone_breaks_the_same_invariants(name: str, tmp_path: Path) -> None:
    """A capture cannot see when the backend consumed: requests published just before the
    disconnect are replayed as already in flight, so which requests hit the unmapped ring
    may differ from the simulation; the invariants broken do not."""
    want, got, _ = _roundtrip(name, tmp_path, "ring.pcapng")
    assert {k[0] for k in got} == {k[0] for k in want} != set()


@pytest.mark.parametrize("name", ["hostile-frontend", "misbehaving-backend"])
def test_trace_and_capture_round_trip_the_hostile_cases(name: str, tmp_path: Path) -> None:
    """The capture's snapshots supply what the dump cannot hold: slot rewrites, a bogus
    req_prod, and the implausible ring the backend halts on. A polled capture may miss a
    rewrite (the slot rewritten and consumed between two snapshots); then, and only then,
    ``slot-mutated`` is absent."""
    want, got, _ = _roundtrip(name, tmp_path, "trace.xentrace", "ring.pcapng")
    seen = load_streams([tmp_path / "ring.pcapng"]).mutations.height
    expected = Counter(k[0] for k in want.elements())
    if not seen:
        del expected["slot-mutated"]
    assert Counter(k[0] for k in got.elements()) == expected


@pytest.mark.parametrize("name", sorted(KNOWN_GAPS))
def test_known_round_trip_gaps(name: str, tmp_path: Path) -> None:
    want, got, halts_ok = _roundtrip(name, tmp_path)
    if got == want and halts_ok:
        pytest.fail(f"{name} now round-trips exactly: move it to EXACT")
    pytest.xfail(KNOWN_GAPS[name])

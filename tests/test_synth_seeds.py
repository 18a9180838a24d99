"""Each seed scenario shows its seed's failure under the legacy logic and none when patched."""

from __future__ import annotations

import pytest

from blktrace_xen.errors import ModelUsageError
from blktrace_xen.synth.scenarios import SCENARIOS, run_scenario

SEED_SCENARIOS = sorted(n for n, s in SCENARIOS.items() if s.seed is not None)


@pytest.mark.parametrize("name", SEED_SCENARIOS)
def test_legacy_logic_shows_the_seed_failure(name: str) -> None:
    scen, sim, logic = run_scenario(name, seed=1, duration_s=0.3)
    assert logic == scen.logic
    assert scen.expect_legacy <= sim.result.invariants(), sorted(sim.result.invariants())


@pytest.mark.parametrize("name", SEED_SCENARIOS)
def test_patched_logic_is_clean(name: str) -> None:
    _, sim, _ = run_scenario(name, seed=1, duration_s=0.3, logic=SCENARIOS[name].patched)
    assert sim.result.violations == []
    assert sim.result.counts["submitted"] > 100


def test_seed003_as_posted_corrupts_data() -> None:
    _, sim, _ = run_scenario("save-restore-during-io", seed=2, duration_s=0.3)
    assert {"misplaced-write", "reissue-mismatch"} <= sim.result.invariants()


def test_seed003_without_recovery_loses_requests() -> None:
    _, sim, _ = run_scenario(
        "save-restore-during-io", seed=2, duration_s=0.3, logic="xbd-2006-norecovery"
    )
    assert "request-not-answered" in sim.result.invariants()


@pytest.mark.parametrize("name", ["steady", "multi-page-ring", "multi-queue"])
def test_clean_scenarios_are_violation_free(name: str) -> None:
    _, sim, _ = run_scenario(name, seed=3, duration_s=0.2)
    assert sim.result.violations == []
    assert sim.result.disk is not None


def test_hostile_and_misbehaving_are_caught() -> None:
    _, hostile, _ = run_scenario("hostile-frontend", seed=1, duration_s=0.2)
    assert {"slot-mutated", "backend-halted"} <= hostile.result.invariants()
    _, bad, _ = run_scenario("misbehaving-backend", seed=1, duration_s=0.2)
    assert "response-not-in-flight" in bad.result.invariants()


def test_unknown_scenario_and_logic_are_usage_errors() -> None:
    with pytest.raises(ModelUsageError, match="unknown scenario"):
        run_scenario("nope")
    with pytest.raises(ModelUsageError, match="unknown logic"):
        run_scenario("steady", logic="nope")

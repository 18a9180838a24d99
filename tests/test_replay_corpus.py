"""Every case in replays/: replay its files against each logic it names, check the verdicts.

Cases are discovered, so a user adds a production trace by adding a folder with the files
and a case.toml (replays/README.md); no code changes. Judged from the files in replays/,
never from a fresh simulation.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from blktrace_xen.replay import replay
from blktrace_xen.streams.load import load_streams

REPLAYS = Path(__file__).resolve().parent.parent / "replays"
CASES = sorted(p.parent for p in REPLAYS.glob("*/case.toml"))
SEED_CASES = {
    "disconnect-during-io",
    "destroy-during-swap",
    "unbind-rebind-loop",
    "save-restore-during-io",
    "migrate-during-io",
}


def _spec(case: Path) -> dict[str, Any]:
    return tomllib.loads((case / "case.toml").read_text())


def test_corpus_has_every_seed_and_the_hostile_cases() -> None:
    names = {c.name for c in CASES}
    assert SEED_CASES | {"hostile-frontend", "misbehaving-backend"} <= names
    for case in CASES:
        spec = _spec(case)
        assert spec["case"]["regenerate"], case.name
        assert (case / "NOTES.md").is_file(), case.name
        assert spec["expect"], case.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_verdicts(case: Path) -> None:
    spec = _spec(case)
    inputs = [case / p for p in spec["case"]["inputs"]]
    cpu_mhz = spec["case"].get("cpu_mhz")
    streams = load_streams(inputs, cpu_mhz=cpu_mhz)
    expects = spec["expect"]
    result = replay(streams, [e["logic"] for e in expects])
    for exp, lv in zip(expects, result.verdicts, strict=True):
        got = set(lv.invariants())
        verdict = "fails" if lv.fails else "passes"
        assert verdict == exp["verdict"], (exp["logic"], sorted(got))
        assert set(exp.get("must", [])) <= got, (exp["logic"], sorted(got))
        assert not set(exp.get("must_not", [])) & got, (exp["logic"], sorted(got))


@pytest.mark.parametrize("name", sorted(SEED_CASES))
def test_seed_case_legacy_fails_and_patched_is_clean(name: str) -> None:
    """The issue's bar: the seed's legacy logic shows the failure, the patched none."""
    from blktrace_xen.model.logic import LOGICS

    expects = _spec(REPLAYS / name)["expect"]
    kinds = [LOGICS[e["logic"]].kind for e in expects]
    assert kinds == ["legacy", "patched"]
    assert expects[0]["verdict"] == "fails" and expects[0]["must"]
    assert expects[1]["verdict"] == "passes"

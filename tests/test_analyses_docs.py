"""The rule docs are generated from the registry and must be current; every rule is complete."""

from __future__ import annotations

from pathlib import Path

from blktrace_xen.analyses import RULES
from blktrace_xen.analyses.docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_generated_rule_docs_are_current() -> None:
    for rel, text in render().items():
        path = ROOT / rel
        assert path.is_file(), f"{rel} missing: run python -m blktrace_xen.analyses.docs"
        assert path.read_text() == text, f"{rel} stale: run python -m blktrace_xen.analyses.docs"


def test_every_rule_documents_meaning_source_and_evidence() -> None:
    for r in RULES.values():
        assert r.id == r.id.lower() and " " not in r.id
        for heading in (
            "## What it means",
            "## The real bug",
            "## Reading the evidence",
            "## Known false positives",
        ):
            assert heading in r.description, (r.id, heading)
        assert r.example and r.source

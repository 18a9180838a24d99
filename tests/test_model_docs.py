"""docs/model.md's generated region matches the code (regenerate with the command inside)."""

from __future__ import annotations

from pathlib import Path

from blktrace_xen.model.diagram import BEGIN, END, generate, rewrite
from blktrace_xen.model.invariants import INVARIANTS
from blktrace_xen.model.state import BACK_TRANSITIONS

DOC = Path(__file__).resolve().parents[1] / "docs" / "model.md"


def test_model_md_is_up_to_date() -> None:
    text = DOC.read_text()
    assert rewrite(text) == text, "run: python -m blktrace_xen.model.diagram --write docs/model.md"


def test_generated_block_covers_every_state_and_invariant() -> None:
    block = generate()
    assert block.startswith(BEGIN) and block.endswith(END)
    for state, events in BACK_TRANSITIONS.items():
        for event in events:
            assert f"| {state.value} | `{event}` |" in block
    for inv in INVARIANTS:
        assert f"`{inv}`" in block

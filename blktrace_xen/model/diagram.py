"""Generate docs/model.md's diagrams and tables from the model's own data.

``python -m blktrace_xen.model.diagram`` prints the generated block;
``python -m blktrace_xen.model.diagram --write docs/model.md`` rewrites the region between
the ``<!-- generated:model -->`` markers (tests check it is up to date).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

from blktrace_xen.model.invariants import INVARIANTS
from blktrace_xen.model.logic import LOGICS
from blktrace_xen.model.state import BACK_TRANSITIONS, FRONT_TRANSITIONS

BEGIN = "<!-- generated:model begin (python -m blktrace_xen.model.diagram --write) -->"
END = "<!-- generated:model end -->"

# Which invariants each seed's legacy logic breaks (asserted in tests/test_model_seeds.py).
SEED_BREAKS = {
    "000": "response-after-unmap",
    "002": "backend-halted (far along), invalid-request / duplicate-in-flight-id (early)",
    "003": "request-not-answered, lost-write (norecovery); reissue-mismatch, misplaced-write, "
    "stale-read, lost-write (as posted)",
    "004": "write-after-handoff, then lost-write / stale-read when the target rewrote",
}


def _mermaid(table: dict[Enum, dict[str, frozenset[Enum]]]) -> list[str]:
    lines = ["```mermaid", "stateDiagram-v2"]
    for state, events in table.items():
        merged: dict[str, list[str]] = {}
        for event, targets in events.items():
            for dest in sorted(targets, key=lambda s: s.value):
                merged.setdefault(dest.value, []).append(event)
        for target, evs in merged.items():
            lines.append(f"    {state.value} --> {target} : {', '.join(evs)}")
    lines.append("```")
    return lines


def _table(table: dict[Enum, dict[str, frozenset[Enum]]]) -> list[str]:
    lines = ["| state | event | may move to |", "|---|---|---|"]
    for state, events in table.items():
        if not events:
            lines.append(f"| {state.value} | (none: every event is illegal) | |")
        for event, targets in events.items():
            to = ", ".join(sorted(t.value for t in targets))
            lines.append(f"| {state.value} | `{event}` | {to} |")
    return lines


def generate() -> str:
    out = [BEGIN, "", "### Backend", ""]
    out += _mermaid(BACK_TRANSITIONS)  # type: ignore[arg-type]
    out += ["", *_table(BACK_TRANSITIONS)]  # type: ignore[arg-type]
    out += ["", "### Frontend", ""]
    out += _mermaid(FRONT_TRANSITIONS)  # type: ignore[arg-type]
    out += ["", *_table(FRONT_TRANSITIONS)]  # type: ignore[arg-type]
    out += ["", "### Invariants", "", "| id | broken when |", "|---|---|"]
    out += [f"| `{k}` | {v} |" for k, v in INVARIANTS.items()]
    out += [
        "",
        "### Logics",
        "",
        "| name | side | seed | kind | paired with | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for spec in sorted(LOGICS.values(), key=lambda s: (s.seed or "", s.name)):
        out.append(
            f"| `{spec.name}` | {spec.side} | {spec.seed or '-'} | {spec.kind} | "
            f"{'`' + spec.paired + '`' if spec.paired else '-'} | {spec.doc} |"
        )
    out += [
        "",
        "### What each seed's legacy logic breaks",
        "",
        "| seed | invariants |",
        "|---|---|",
    ]
    out += [f"| {seed} | {text} |" for seed, text in SEED_BREAKS.items()]
    out += ["", END]
    return "\n".join(out)


def rewrite(text: str) -> str:
    start = text.index(BEGIN)
    end = text.index(END) + len(END)
    return text[:start] + generate() + text[end:]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write":
        path = Path(argv[1])
        path.write_text(rewrite(path.read_text()))
        return 0
    print(generate())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

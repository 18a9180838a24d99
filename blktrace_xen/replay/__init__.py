"""Replay a trace's traffic against several logics and compare the verdicts.

Typical use::

    from blktrace_xen.replay import replay
    from blktrace_xen.streams.load import load_streams

    result = replay(load_streams([Path("incident.xt")]), ["xbdback-2005-immediate",
                                                          "xbdback-2005-refcount"])
    result.verdicts[-1].fails      # does the last-named (patched) logic still break?
    result.to_dict()               # the JSON shape documented in docs/replay.md

The conversion from streams to model inputs is :mod:`blktrace_xen.replay.inputs`, the
per-logic loop :mod:`blktrace_xen.replay.engine`, the meaning of ``--logic``
:mod:`blktrace_xen.replay.logics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blktrace_xen.errors import ModelUsageError
from blktrace_xen.model.events import Violation
from blktrace_xen.replay.engine import EngineResult, flag_lost, run_logic
from blktrace_xen.replay.inputs import (
    K_COMPLETE,
    K_RESPONSE,
    K_SUBMIT,
    Caveat,
    ReplayInput,
    build_input,
)
from blktrace_xen.replay.logics import LogicPair, resolve
from blktrace_xen.streams import Streams

JSON_VERSION = 1


@dataclass(slots=True, kw_only=True)
class LogicVerdict:
    """One logic's replay: its violations, and what it could not follow."""

    logic: LogicPair
    run: EngineResult
    lost_flags: list[bool]
    caveats: list[Caveat]

    @property
    def violations(self) -> list[Violation]:
        return self.run.result.violations

    @property
    def fails(self) -> bool:
        return bool(self.violations)

    def invariants(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.violations:
            out[v.invariant] = out.get(v.invariant, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        """The verdict as ``replay --json`` prints it and ``report --verdicts`` reads it."""
        run = self.run
        return {
            "logic": self.logic.label,
            "backend": self.logic.backend,
            "frontend": self.logic.frontend,
            "verdict": "fails" if self.fails else "passes",
            "by_invariant": self.invariants(),
            "violations": [
                {
                    "invariant": v.invariant,
                    "t_ns": v.t_ns,
                    "domid": v.ring[0],
                    "vdev": v.ring[1],
                    "queue": v.ring[2],
                    "id": v.id,
                    "idx": v.idx,
                    "message": v.message,
                    "evidence": _jsonable(v.evidence),
                    "in_lost_window": lost,
                }
                for v, lost in zip(self.violations, self.lost_flags, strict=True)
            ],
            "caveats": [c.message for c in self.caveats],
            "caveat_details": [c.to_dict() for c in self.caveats],
            "skipped": dict(sorted(run.skipped_by_reason.items())),
            "skipped_examples": [s.to_dict() for s in run.skipped],
            "events": run.fed,
            "events_in_bulk": run.bulk_events,
            "completed_at_end": run.completed_at_end,
            "elapsed_s": round(run.elapsed_s, 6),
        }


@dataclass(slots=True, kw_only=True)
class ReplayResult:
    """Every logic replayed against one trace, in the order they were named."""

    verdicts: list[LogicVerdict]
    input: ReplayInput
    inputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def inconclusive(self) -> str | None:
        """Why the verdicts say nothing, or None. A replay that drove no I/O through the
        logics "passes" only because nothing happened: that is no evidence for a fix."""
        io = (K_SUBMIT, K_COMPLETE, K_RESPONSE)
        if not any(k in io for k in self.input.kinds):
            return (
                "the inputs hold no blkif request or response to replay (stock xentrace has "
                "none: capture with `blktrace-xen capture` or an instrumented driver)"
            )
        return None

    @property
    def last_fails(self) -> bool:
        """The CI question: does the last-named logic (the patch) still break?"""
        return bool(self.verdicts) and self.verdicts[-1].fails

    def side_by_side(self) -> list[dict[str, Any]]:
        """One row per invariant any logic broke: ``{"invariant", <label>: count, ...}``."""
        names = sorted({v.invariant for lv in self.verdicts for v in lv.violations})
        rows = []
        for name in names:
            row: dict[str, Any] = {"invariant": name}
            for lv in self.verdicts:
                row[lv.logic.label] = lv.invariants().get(name, 0)
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "inputs": self.inputs,
            "events": self.input.counts.get("events", 0),
            "counts": self.input.counts,
            "caveats": [c.to_dict() for c in self.input.caveats],
            "verdicts": [v.to_dict() for v in self.verdicts],
            "side_by_side": self.side_by_side(),
            "last_fails": self.last_fails,
            "inconclusive": self.inconclusive,
        }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def _logic_caveats(inp: ReplayInput, run: EngineResult) -> list[Caveat]:
    out = list(inp.caveats)
    rings = run.result.rings
    outstanding = sum(r.outstanding for r in rings.values())
    if outstanding:
        out.append(
            Caveat(
                kind="unanswered-at-end",
                count=outstanding,
                message=(
                    f"{outstanding} request(s) not seen answered by the frontend when the "
                    "trace ends under this logic (no traced completion, or no traced "
                    "frontend consume after it): not judged"
                ),
            )
        )
    if run.completed_at_end:
        out.append(
            Caveat(
                kind="completed-at-end",
                count=run.completed_at_end,
                t_ns=run.end_ns,
                message=(
                    f"{run.completed_at_end} I/O(s) this logic had in flight have no traced "
                    f"completion (the trace ends, or the response went nowhere): replayed as "
                    f"completing at the end of the trace ({run.end_ns} ns), in issue order"
                ),
            )
        )
    for reason, n in sorted(run.skipped_by_reason.items()):
        out.append(
            Caveat(
                kind="skipped",
                count=n,
                message=f"{n} traced event(s) not replayed under this logic ({reason})",
            )
        )
    return out


def replay(
    streams: Streams,
    logics: Sequence[str],
    *,
    verify_data: bool = True,
    bulk: bool = True,
) -> ReplayResult:
    """Replay ``streams`` against each of ``logics`` (``--logic`` values, in order).

    ``verify_data=False`` skips the disk-content oracle (faster; no lost/stale/misplaced
    write verdicts). ``bulk=False`` replays the steady windows event by event too (slower,
    the same verdicts; see :mod:`blktrace_xen.replay.bulk`). Raises
    :class:`~blktrace_xen.errors.LogicLoadError` for a logic that cannot be loaded, before
    anything runs.
    """
    if not logics:
        raise ModelUsageError("replay needs at least one logic")
    pairs = [resolve(name) for name in logics]
    inp = build_input(streams)
    verdicts = []
    for pair in pairs:
        run = run_logic(
            inp, backend=pair.backend, frontend=pair.frontend, verify_data=verify_data, bulk=bulk
        )
        verdicts.append(
            LogicVerdict(
                logic=pair,
                run=run,
                lost_flags=flag_lost(run.result.violations, inp.lost_windows),
                caveats=_logic_caveats(inp, run),
            )
        )
    return ReplayResult(verdicts=verdicts, input=inp, inputs=list(streams.meta.get("inputs") or []))


def verdicts(streams: Streams, logics: Sequence[str]) -> list[dict[str, Any]]:
    """Replay verdicts as dicts, in the shape ``blktrace-xen report`` renders."""
    return [v.to_dict() for v in replay(streams, logics).verdicts]


def replay_paths(
    paths: Sequence[Path],
    logics: Sequence[str],
    *,
    cpu_mhz: float | None = None,
    bulk: bool = True,
) -> ReplayResult:
    """Load ``paths`` (xentrace dumps, ring captures, streams folders) and replay them."""
    from blktrace_xen.streams.load import load_streams

    for name in logics:  # a bad --logic fails before any decoding
        resolve(name)
    return replay(load_streams(list(paths), cpu_mhz=cpu_mhz), logics, bulk=bulk)


__all__ = [
    "Caveat",
    "LogicVerdict",
    "ReplayResult",
    "replay",
    "replay_paths",
    "verdicts",
]

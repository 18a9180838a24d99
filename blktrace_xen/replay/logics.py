"""What ``--logic X`` means: a backend and a frontend logic for the model.

``X`` is a registered name (:data:`blktrace_xen.model.logic.LOGICS`), ``path.py:Class``
(a user's logic), or ``BACK+FRONT`` to pair two of those. A name that models one side
runs against ``linux-default`` on the other side; ``linux-default`` names both.
"""

from __future__ import annotations

from dataclasses import dataclass

from blktrace_xen.errors import LogicLoadError
from blktrace_xen.model.logic import LOGICS, load_logic

REFERENCE = "linux-default"


@dataclass(frozen=True, slots=True)
class LogicPair:
    """The two halves one replay runs; ``label`` is what the user wrote."""

    label: str
    backend: str
    frontend: str


def _side_of(ref: str) -> str:
    """ "back", "front" or "both" for a name or a user file; LogicLoadError if neither."""
    if ":" not in ref:
        spec = LOGICS.get(ref)
        if spec is None:
            known = ", ".join(sorted(LOGICS))
            raise LogicLoadError(f"unknown logic {ref!r}; known: {known}")
        return spec.side
    errors = []
    for side in ("back", "front"):
        try:
            load_logic(ref, side)
        except LogicLoadError as exc:
            errors.append(str(exc))
            continue
        return side
    # Same message twice means the file itself is the problem (missing, import error).
    if errors[0] == errors[1]:
        raise LogicLoadError(errors[0])
    raise LogicLoadError(f"{errors[0]}; as a frontend: {errors[1].split(' is not ', 1)[-1]}")


def resolve(label: str) -> LogicPair:
    """Parse one ``--logic`` value into the pair of logics to run."""
    parts = [p.strip() for p in label.split("+") if p.strip()]
    if not parts or len(parts) > 2:
        raise LogicLoadError(f"--logic {label!r}: give NAME, path.py:Class, or BACK+FRONT")
    back: str | None = None
    front: str | None = None
    for ref in parts:
        side = _side_of(ref)
        if side in ("back", "both") and back is None:
            back = ref
            if side == "both" and front is None and len(parts) == 1:
                front = ref
        elif side in ("front", "both") and front is None:
            front = ref
        else:
            raise LogicLoadError(f"--logic {label!r}: two {side}end logics")
    back = back or REFERENCE
    front = front or REFERENCE
    # References, not objects: the model builds a frontend logic per ring (it keeps
    # per-ring state), and _side_of has already checked that each one loads.
    return LogicPair(label=label, backend=back, frontend=front)


__all__ = ["REFERENCE", "LogicPair", "resolve"]

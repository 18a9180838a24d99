"""One exception hierarchy for blktrace-xen.

Every error the library raises on bad input or misuse derives from
:class:`BlktraceXenError`, so the CLI can catch exactly one type and print one
line. Decode errors carry where the problem is (file, byte offset, record
index, field) as attributes and build their message from them, e.g.::

    xentrace: trace.bin: record #1843 at offset 0x1f3a0 (field extra[2]):
        need 4 bytes, 2 left
"""

from __future__ import annotations

from pathlib import Path


class BlktraceXenError(Exception):
    """Root of every error blktrace-xen raises on purpose."""

    exit_code: int = 1


class InputFileError(BlktraceXenError):
    """A named input cannot be opened or is not a format we read."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DecodeError(BlktraceXenError):
    """Bytes that do not follow the declared format.

    ``fmt`` names the format ("xentrace", "ringcap", "blkif"), ``offset`` is the
    byte offset in ``path`` where the problem starts, ``record_index`` the index
    of the record or block being decoded, ``field`` the field that failed.
    """

    def __init__(
        self,
        fmt: str,
        problem: str,
        *,
        path: str | Path | None = None,
        offset: int | None = None,
        record_index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.fmt = fmt
        self.problem = problem
        self.path = None if path is None else str(path)
        self.offset = offset
        self.record_index = record_index
        self.field = field
        super().__init__(self._message())

    def _message(self) -> str:
        where = [self.fmt + ":"]
        if self.path is not None:
            where.append(f"{self.path}:")
        what = []
        if self.record_index is not None:
            what.append(f"record #{self.record_index}")
        if self.offset is not None:
            what.append(f"at offset {self.offset:#x}")
        if self.field is not None:
            what.append(f"(field {self.field})")
        head = " ".join(where)
        if what:
            return f"{head} {' '.join(what)}: {self.problem}"
        return f"{head} {self.problem}"


class TruncatedRecord(DecodeError):
    """The input ends inside a record or block."""


class MalformedRecord(DecodeError):
    """A record or block whose fields contradict the format."""


class CatalogError(BlktraceXenError):
    """An event catalog (formats/*.toml) that cannot be loaded."""


class SchemaError(BlktraceXenError):
    """A frame that does not match its documented schema.

    ``problems`` lists every problem found, not just the first.
    """

    def __init__(self, table: str, problems: list[str]) -> None:
        self.table = table
        self.problems = problems
        super().__init__(f"{table}: " + "; ".join(problems))


class RingInvariantError(BlktraceXenError):
    """A ring observation that breaks a blkif ring invariant where a value was required."""


class FrontendProtocolError(BlktraceXenError):
    """The model received an event that is illegal in its current state.

    Raised by the I/O-free model (like h11's RemoteProtocolError): the state is
    left unchanged.
    """

    def __init__(self, ring: str, state: str, event: str, problem: str) -> None:
        self.ring = ring
        self.state = state
        self.event = event
        self.problem = problem
        super().__init__(f"ring {ring}: {event} in state {state}: {problem}")


class ModelUsageError(BlktraceXenError):
    """The caller misused the model or replay API (like h11's LocalProtocolError)."""


class LogicLoadError(BlktraceXenError):
    """A user logic (--logic path.py:Class) cannot be loaded or does not meet the interface."""


class ReplayDivergence(BlktraceXenError):
    """Replay could not follow the trace under the chosen logic."""

    exit_code = 3


class CaptureError(BlktraceXenError):
    """``capture`` cannot run here (not root, no xen-blkback, no BTF, a probe missing ...)."""

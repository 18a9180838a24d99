"""Inputs to the model and its outputs, as frozen, slotted, keyword-only dataclasses.

Every input carries ``t_ns`` (virtual time) and ``ring``, the ring key
``(frontend domid, vdev, queue)``. Inputs say what happened in the world (the frontend
published a request, the disk finished an I/O, the toolstack unbound the backend); the
machines decide, according to their logic, what the blkif drivers do about it, and report
that as actions. Invariant breaks are reported as :class:`Violation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RingKey = tuple[int, int, int]
DEFAULT_RING: RingKey = (1, 51712, 0)  # domU 1, xvda, queue 0


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontSubmit:
    """The guest issues one request; the frontend logs it and publishes it on the ring.

    ``id`` is a request for a specific ring id (honoured by logics that allocate ids from a
    shadow array, ignored by the others: read the id back from :class:`RequestPushed`).
    ``data_version`` is the caller's tag for the data written (kept as evidence); the
    disk oracle identifies each write by its submission ``seq``.
    ``indirect_op``: for ``operation`` BLKIF_OP_INDIRECT (6), the real operation (READ or
    WRITE), which its response carries; ``nr_segments`` may then go up to the backend's
    ``max_indirect_segments``. Ignored for other operations.
    """

    t_ns: int
    ring: RingKey = DEFAULT_RING
    operation: int
    sector_number: int
    nr_sectors: int
    nr_segments: int = 1
    data_version: int = 0
    id: int | None = None
    indirect_op: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BackConsume:
    """The backend's thread / event handler runs: it reads every published request it may."""

    t_ns: int
    ring: RingKey = DEFAULT_RING


@dataclass(frozen=True, slots=True, kw_only=True)
class BackComplete:
    """The disk I/O of one consumed request finished; the backend produces its response.

    The request is found by ``seq`` (the submission number, stable across re-issues) when
    given, else by ring ``id``. ``backend`` picks a backend instance (0 = the first) when
    several hold the request; default: the oldest that holds it.
    """

    t_ns: int
    ring: RingKey = DEFAULT_RING
    id: int | None = None
    seq: int | None = None
    status: int = 0
    backend: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontConsume:
    """The frontend's interrupt handler runs: it reads the published responses."""

    t_ns: int
    ring: RingKey = DEFAULT_RING


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnect:
    """A disconnect request: from the toolstack to the backend (side="back", seed 000's
    CMSG_BLKIF_BE_DISCONNECT), or the frontend closing (side="front")."""

    t_ns: int
    ring: RingKey = DEFAULT_RING
    side: Literal["front", "back"] = "back"


@dataclass(frozen=True, slots=True, kw_only=True)
class Unbind:
    """The backend driver is unbound from the device (sysfs unbind, module unload)."""

    t_ns: int
    ring: RingKey = DEFAULT_RING


@dataclass(frozen=True, slots=True, kw_only=True)
class Bind:
    """The backend driver is bound again (or a disconnected backend is told to connect)."""

    t_ns: int
    ring: RingKey = DEFAULT_RING


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspend:
    """The guest suspends (save, or the last phase of a live migration)."""

    t_ns: int
    ring: RingKey = DEFAULT_RING


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """The guest is restored: a fresh ring and a fresh backend; the frontend recovers."""

    t_ns: int
    ring: RingKey = DEFAULT_RING


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainDestroy:
    """The toolstack destroys the guest: backend disconnect, then destroy of the instance."""

    t_ns: int
    ring: RingKey = DEFAULT_RING


@dataclass(frozen=True, slots=True, kw_only=True)
class Handoff:
    """Migration: the toolstack removes the source's devices and wants the guest started on
    the target (seed 004). When the target really starts is the backend logic's business."""

    t_ns: int
    ring: RingKey = DEFAULT_RING


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontSetReqProd:
    """Hostile frontend: write ``req_prod`` directly (e.g. far beyond the ring size)."""

    t_ns: int
    ring: RingKey = DEFAULT_RING
    req_prod: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontMutateSlot:
    """Hostile frontend: rewrite the request at ring index ``idx`` after publishing it."""

    t_ns: int
    ring: RingKey = DEFAULT_RING
    idx: int
    operation: int | None = None
    sector_number: int | None = None
    nr_sectors: int | None = None
    nr_segments: int | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BackRespond:
    """Misbehaving backend: push a response the disk never asked for (any id/op/status)."""

    t_ns: int
    ring: RingKey = DEFAULT_RING
    id: int
    operation: int
    status: int = 0


InputEvent = (
    FrontSubmit
    | BackConsume
    | BackComplete
    | FrontConsume
    | Disconnect
    | Unbind
    | Bind
    | Suspend
    | Resume
    | DomainDestroy
    | Handoff
    | FrontSetReqProd
    | FrontMutateSlot
    | BackRespond
)

INPUT_EVENTS: tuple[type, ...] = (
    FrontSubmit,
    BackConsume,
    BackComplete,
    FrontConsume,
    Disconnect,
    Unbind,
    Bind,
    Suspend,
    Resume,
    DomainDestroy,
    Handoff,
    FrontSetReqProd,
    FrontMutateSlot,
    BackRespond,
)

# ---------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """An invariant broken (ids: :data:`blktrace_xen.model.invariants.INVARIANTS`)."""

    t_ns: int
    ring: RingKey
    invariant: str
    id: int | None
    idx: int | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestPushed:
    """The frontend wrote a request into slot ``idx`` and published it (req_prod = idx+1)."""

    t_ns: int
    ring: RingKey
    idx: int
    id: int
    seq: int
    operation: int
    sector_number: int
    nr_sectors: int
    nr_segments: int
    reissue: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestConsumed:
    """Backend instance ``backend`` copied the request at ``idx`` (``seq`` -1: garbage)."""

    t_ns: int
    ring: RingKey
    backend: int
    idx: int
    id: int
    seq: int
    operation: int
    sector_number: int
    nr_sectors: int
    nr_segments: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponsePushed:
    """Backend instance ``backend`` wrote a response at ``idx`` and published it."""

    t_ns: int
    ring: RingKey
    backend: int
    idx: int
    id: int
    seq: int
    operation: int
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseConsumed:
    """The frontend read the response at ``idx``."""

    t_ns: int
    ring: RingKey
    idx: int
    id: int
    operation: int
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Notify:
    """An event-channel notification (the push crossed the other side's ``*_event``)."""

    t_ns: int
    ring: RingKey
    side: Literal["front", "back"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged:
    """A machine changed state; ``xenbus`` is the matching ``enum xenbus_state`` value."""

    t_ns: int
    ring: RingKey
    side: Literal["front", "back"]
    backend: int | None
    state: str
    xenbus: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RingMapped:
    """Backend instance ``backend`` mapped the ring and set its private indices."""

    t_ns: int
    ring: RingKey
    backend: int
    req_cons: int
    rsp_prod_pvt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RingUnmapped:
    t_ns: int
    ring: RingKey
    backend: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BindFailed:
    """The backend refused to attach (``errno``: -5 = -EIO, blkback's plausibility check)."""

    t_ns: int
    ring: RingKey
    backend: int
    errno: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DisconnectAnswered:
    """The backend answered the toolstack's disconnect request (seed 000)."""

    t_ns: int
    ring: RingKey
    backend: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RefChanged:
    """xbdi_get / xbdi_put (seed 000): ``refcnt`` after the change."""

    t_ns: int
    ring: RingKey
    backend: int
    delta: int
    refcnt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendHalted:
    """blkback saw ``req_prod - rsp_prod_pvt > nr_ents`` and parked its ring thread."""

    t_ns: int
    ring: RingKey
    backend: int
    req_prod: int
    rsp_prod_pvt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReissued:
    """After resume the frontend re-published an outstanding request (``seq`` = original)."""

    t_ns: int
    ring: RingKey
    id: int
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownDone:
    """The backend published "shutdown-done" in xenstore (seed 004, patched)."""

    t_ns: int
    ring: RingKey
    backend: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetStarted:
    """The toolstack started the guest on the migration target; ``backend`` is the new
    instance, on a fresh ring."""

    t_ns: int
    ring: RingKey
    backend: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskWrite:
    """A write reached the disk (sector range as the backend executed it)."""

    t_ns: int
    ring: RingKey
    backend: int
    seq: int
    sector_number: int
    nr_sectors: int


Action = (
    RequestPushed
    | RequestConsumed
    | ResponsePushed
    | ResponseConsumed
    | Notify
    | StateChanged
    | RingMapped
    | RingUnmapped
    | BindFailed
    | DisconnectAnswered
    | RefChanged
    | BackendHalted
    | RequestReissued
    | ShutdownDone
    | TargetStarted
    | DiskWrite
)

"""States of the backend and frontend machines and the transitions they may take.

Theory of operation
===================

One :class:`~blktrace_xen.model.system.RingSystem` per ring drives one frontend and one
or more backend *instances* (a new instance after bind-while-draining, resume, or a
migration handoff; old instances live on while their disk I/O is outstanding, because
that is exactly where the seeds' bugs are).

Rule 1: an input event that is not listed for the machine's current state below is
illegal: the machine raises :class:`~blktrace_xen.errors.FrontendProtocolError` naming
ring, state and event, and *changes nothing*. The same holds for a legal event type whose
content contradicts the state (a ``BackComplete`` for a request no backend holds, a
``FrontSubmit`` on a full ring).

Rule 2: a legal event moves the machine to one of the states listed for it. Which one is
the *logic's* decision (e.g. ``Disconnect`` in ``CONNECTED``: an immediate disconnect goes
to ``DISCONNECTED``, the refcounted one to ``DRAINING``); a logic that picks a state not in
the table is a bug in the logic and raises :class:`~blktrace_xen.errors.ModelUsageError`.

Rule 3: invariants are checked by the model, not by the logic: a logic can only change
what the drivers *do*; the model reports what that breaks (:mod:`.invariants`).

The tables are plain data so that docs/model.md's diagram and tables are generated from
them (``python -m blktrace_xen.model.diagram``).
"""

from __future__ import annotations

from enum import Enum
from typing import Final


class BackState(Enum):
    CONNECTED = "CONNECTED"  # ring mapped, requests consumed
    HALTED = "HALTED"  # ring mapped, thread parked after a bogus req_prod
    DRAINING = "DRAINING"  # stop requested, waiting for outstanding I/O (xbdback DISCONNECTING)
    DISCONNECTED = "DISCONNECTED"  # ring unmapped, instance still exists (may bind/connect)
    GONE = "GONE"  # instance destroyed / removed; late disk completions may still arrive

    # Members are singletons compared by identity; Enum's own __hash__ (a Python call per
    # table lookup) was a tenth of the model's time. Name hashes vary per process anyway.
    __hash__ = object.__hash__


class FrontState(Enum):
    CONNECTED = "CONNECTED"  # publishing requests, reading responses
    ERROR = "ERROR"  # blkfront BLKIF_STATE_ERROR: disabled after a bad response
    SUSPENDED = "SUSPENDED"  # guest suspended: nothing issued, interrupts dropped
    CLOSED = "CLOSED"  # domain destroyed or frontend closed

    __hash__ = object.__hash__  # see BackState


# enum xenbus_state (io/xenbus.h) shown for each state in StateChanged actions.
XENBUS_CONNECTED: Final = 4
XENBUS_CLOSING: Final = 5
XENBUS_CLOSED: Final = 6
XENBUS_INITIALISING: Final = 1

BACK_XENBUS: Final[dict[BackState, int]] = {
    BackState.CONNECTED: XENBUS_CONNECTED,
    BackState.HALTED: XENBUS_CONNECTED,
    BackState.DRAINING: XENBUS_CLOSING,
    BackState.DISCONNECTED: XENBUS_CLOSED,
    BackState.GONE: XENBUS_CLOSED,
}
FRONT_XENBUS: Final[dict[FrontState, int]] = {
    FrontState.CONNECTED: XENBUS_CONNECTED,
    FrontState.ERROR: XENBUS_CONNECTED,
    FrontState.SUSPENDED: XENBUS_INITIALISING,
    FrontState.CLOSED: XENBUS_CLOSED,
}

B = BackState
F = FrontState
_STOPS = frozenset({B.DRAINING, B.DISCONNECTED, B.GONE})

# state -> input event name -> the states a logic may move the machine to.
BACK_TRANSITIONS: Final[dict[BackState, dict[str, frozenset[BackState]]]] = {
    B.CONNECTED: {
        "BackConsume": frozenset({B.CONNECTED, B.HALTED}),
        # DISCONNECTED: the posted xbdback refcount patch tears the ring down when a
        # reconnected instance's count reaches zero (spurious-disconnect).
        "BackComplete": frozenset({B.CONNECTED, B.DISCONNECTED}),
        "BackRespond": frozenset({B.CONNECTED}),
        "Disconnect": _STOPS,
        "Unbind": _STOPS,
        "DomainDestroy": _STOPS,
        "Handoff": _STOPS,
    },
    B.HALTED: {
        "BackConsume": frozenset({B.HALTED}),
        "BackComplete": frozenset({B.HALTED, B.DISCONNECTED}),
        "BackRespond": frozenset({B.HALTED}),
        "Disconnect": _STOPS,
        "Unbind": _STOPS,
        "DomainDestroy": _STOPS,
        "Handoff": _STOPS,
    },
    B.DRAINING: {
        "BackConsume": frozenset({B.DRAINING}),
        "BackComplete": _STOPS,
        "BackRespond": frozenset({B.DRAINING}),
        "DomainDestroy": _STOPS,
        "Handoff": _STOPS,
    },
    B.DISCONNECTED: {
        "Bind": frozenset({B.CONNECTED, B.DISCONNECTED}),
        "BackComplete": frozenset({B.DISCONNECTED}),
        "DomainDestroy": frozenset({B.GONE}),
        "Handoff": frozenset({B.GONE}),
    },
    B.GONE: {
        "BackComplete": frozenset({B.GONE}),
    },
}

FRONT_TRANSITIONS: Final[dict[FrontState, dict[str, frozenset[FrontState]]]] = {
    F.CONNECTED: {
        "FrontSubmit": frozenset({F.CONNECTED}),
        "FrontConsume": frozenset({F.CONNECTED, F.ERROR}),
        "FrontSetReqProd": frozenset({F.CONNECTED}),
        "FrontMutateSlot": frozenset({F.CONNECTED}),
        "Suspend": frozenset({F.SUSPENDED}),
        "Disconnect": frozenset({F.CLOSED}),
        "DomainDestroy": frozenset({F.CLOSED}),
    },
    F.ERROR: {
        "FrontConsume": frozenset({F.ERROR}),
        "Suspend": frozenset({F.SUSPENDED}),
        "Disconnect": frozenset({F.CLOSED}),
        "DomainDestroy": frozenset({F.CLOSED}),
    },
    F.SUSPENDED: {
        "FrontConsume": frozenset({F.SUSPENDED}),
        "Resume": frozenset({F.CONNECTED}),
        "Handoff": frozenset({F.SUSPENDED, F.CONNECTED}),
        "DomainDestroy": frozenset({F.CLOSED}),
    },
    F.CLOSED: {},
}

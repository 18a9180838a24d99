"""The invariants the model checks, by stable id (used by replay verdicts and reports).

The machines report a :class:`~blktrace_xen.model.events.Violation` carrying one of these
ids; a logic never decides whether an invariant holds (state.py, Rule 3).
"""

from __future__ import annotations

from typing import Final

INVARIANTS: Final[dict[str, str]] = {
    "response-after-unmap": "a backend produced a response after its ring was unmapped "
    "(seed 000: the write into the unmapped page is the panic)",
    "request-not-answered": "a request the frontend had outstanding was dropped without an "
    "answer (not re-issued at resume, or never answered by a backend that went away)",
    "duplicate-response": "a response for an id whose request was already answered",
    "response-not-in-flight": "a response whose id matches no outstanding request",
    "response-op-mismatch": "a response whose operation differs from its request's",
    "implausible-producer": "req_prod - rsp_prod > ring size on the shared page",
    "implausible-response-producer": "rsp_prod - rsp_cons > ring size at the frontend "
    "(responses produced from a reset rsp_prod_pvt, or a lying backend)",
    "reissue-mismatch": "a request re-issued after resume differs from the original in "
    "operation, sector, sector count or segment count",
    "write-after-handoff": "a write from the old backend reached the disk after the guest "
    "was started on the migration target (seed 004)",
    "lost-write": "a write the guest issued (and was not told failed) is not on the disk",
    "duplicated-write": "a write reached the disk again after the guest was told it completed",
    "misplaced-write": "a write reached the disk at sectors other than those it was issued for",
    "stale-read": "a read returned data other than the last write acknowledged for a sector "
    "with no write outstanding (fio --verify)",
    "backend-halted": "blkback saw req_prod - rsp_prod_pvt > ring size and parked its ring",
    "spurious-disconnect": "the backend tore down a ring nobody asked it to disconnect "
    "(xbdback: refcount reached zero while CONNECTED, the KASSERT in "
    "xbdback_finish_disconnect)",
    "duplicate-in-flight-id": "a backend consumed a request whose id it already had in flight",
    "slot-mutated": "a published request slot changed after the backend could have read it",
    "invalid-request": "a consumed request the backend had to reject (bad segment count, "
    "an indirect request whose indirect_op is not READ/WRITE, or any request decoded from a "
    "slot that held no request); an unknown operation from the frontend is answered "
    "EOPNOTSUPP and is not a violation",
}

"""Seed 000: NetBSD xbdback, 2005 — "xbd backend disconnection" (Jed Davis, port-xen).

``xbdback-2005-immediate`` (legacy): CMSG_BLKIF_BE_DISCONNECT masks the event channel,
removes the handler, pmap_remove()s and frees the ring page and answers OKAY at once, with
I/O still at the disk. xbdback_iodone later writes the response into the unmapped ring:
the panic (``response-after-unmap``). Domain destroy during heavy (swap) I/O is the same
path.

``xbdback-2005-refcount`` (patched, exactly as posted): ``refcnt = 1`` at instance
creation; ``xbdi_get`` in xbdback_co_io_gotio (one per I/O); ``xbdi_put`` at the end of
xbdback_iodone, *after* the reply was sent; the disconnect sets ``status = DISCONNECTING``
and drops the instance's reference. When the count reaches zero xbdback_finish_disconnect
KASSERTs DISCONNECTING, masks the event channel, pmap_remove()s the ring (the page stays
allocated, freed by CMSG_BLKIF_BE_DESTROY, reused by a reconnect), sets DISCONNECTED and
only then answers the disconnect. DESTROY is refused (INTERFACE_CONNECTED) until then; the
toolstack retries, which the model shows as a destroy performed when the disconnect
finishes. The event handler stays installed while DISCONNECTING, so requests the frontend
still publishes are consumed (and take references).

As posted, nothing sets ``refcnt`` again on reconnect: after disconnect + connect it is 0,
so the first completed I/O drops it to 0 and xbdback_finish_disconnect runs on a CONNECTED
instance (the KASSERT; without DIAGNOSTIC the ring is unmapped under the live frontend).
The model reports that as ``spurious-disconnect``; ``xbdback-2005-refcount-fixed`` re-arms
the count on connect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blktrace_xen.model.logics.linux import LinuxBlkback
from blktrace_xen.model.ring import Req
from blktrace_xen.model.state import BackState

if TYPE_CHECKING:
    from blktrace_xen.model.backend import Backend


class XbdbackImmediate(LinuxBlkback):
    name = "xbdback-2005-immediate"
    checks_request_overflow = False  # no such check in 2005
    consumes_while_draining = False

    def disconnect(self, be: Backend, t_ns: int, goal: str) -> None:
        be.stop(t_ns, goal, wait=False)

    def unbind(self, be: Backend, t_ns: int) -> None:
        be.stop(t_ns, "disconnect", wait=False)

    def remove(self, be: Backend, t_ns: int) -> None:
        be.stop(t_ns, "remove", wait=False)
        be.start_target(t_ns)

    def finished(self, be: Backend, t_ns: int, goal: str) -> None:
        return None


class XbdbackRefcount(LinuxBlkback):
    name = "xbdback-2005-refcount"
    checks_request_overflow = False
    consumes_while_draining = True  # the handler is removed only in finish_disconnect

    def io_started(self, be: Backend, req: Req, t_ns: int) -> None:
        be.ref(t_ns, +1)  # xbdi_get in xbdback_co_io_gotio

    def io_done(self, be: Backend, req: Req, t_ns: int) -> None:
        self._put(be, t_ns)  # xbdi_put at the end of xbdback_iodone

    def disconnect(self, be: Backend, t_ns: int, goal: str) -> None:
        be.goal = goal
        if goal == "destroy":
            be.pending_destroy = True  # DESTROY refused until DISCONNECTED, then retried
        be.set_state(t_ns, BackState.DRAINING)  # status = DISCONNECTING
        self._put(be, t_ns)

    def unbind(self, be: Backend, t_ns: int) -> None:
        self.disconnect(be, t_ns, "disconnect")

    def remove(self, be: Backend, t_ns: int) -> None:
        self.disconnect(be, t_ns, "remove")

    def _put(self, be: Backend, t_ns: int) -> None:
        if be.ref(t_ns, -1) == 0:
            self._finish_disconnect(be, t_ns)

    def _finish_disconnect(self, be: Backend, t_ns: int) -> None:
        if be.state is not BackState.DRAINING:
            be.violate(
                t_ns,
                "spurious-disconnect",
                None,
                None,
                f"refcount reached 0 while {be.state.value}: xbdback_finish_disconnect "
                "KASSERT(status == DISCONNECTING) fails; the ring is unmapped under "
                "the live frontend",
                refcnt=be.refcnt,
            )
        if be.goal is None:
            be.goal = "disconnect"
        be.complete_goal(t_ns)

    def drained(self, be: Backend, t_ns: int) -> None:
        return None  # the reference count decides, not the in-flight count

    def finished(self, be: Backend, t_ns: int, goal: str) -> None:
        if goal == "remove":
            be.start_target(t_ns)


class XbdbackRefcountFixed(XbdbackRefcount):
    name = "xbdback-2005-refcount-fixed"

    def attach(self, be: Backend, t_ns: int) -> bool:
        if be.refcnt == 0:
            be.ref(t_ns, +1)  # the reconnected instance holds its reference again
        return super().attach(be, t_ns)

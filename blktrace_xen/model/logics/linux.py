"""Modern Linux xen-blkback / xen-blkfront: the reference behaviour and the base classes to
subclass for your own logic.

Backend (drivers/block/xen-blkback, 2019+): on connect, BACK_RING_ATTACH at the page's
rsp_prod and -EIO when ``req_prod - rsp_prod > size``; RING_REQUEST_PROD_OVERFLOW halts the
ring; a disconnect, unbind or removal with I/O in flight keeps the ring mapped until the
last completion ("xen/blkback: fix disconnect while I/Os in flight"); allow_rebind.

Frontend (drivers/block/xen-blkfront): ids are shadow indices from a LIFO free list
(get_id_from_freelist / add_id_to_freelist), the shadow holds the whole request, every
outstanding request is re-queued on resume (blkif_recover), and a response with a bad id,
a wrong operation or an implausible rsp_prod disables the device ("xen/blkfront: don't trust
the backend response data blindly", 2021).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blktrace_xen.model.events import BindFailed
from blktrace_xen.model.ring import BLKIF_RSP_EOPNOTSUPP, MASK32, MAX_INDIRECT_SEGMENTS, Req

if TYPE_CHECKING:
    from blktrace_xen.model.backend import Backend
    from blktrace_xen.model.frontend import Frontend

EIO = -5


class LinuxBlkback:
    """Modern Linux blkback. Every hook is small; override the one your driver differs in."""

    name = "linux-default"
    checks_request_overflow = True
    consumes_while_draining = False
    # Optional (read with a default): feature-max-indirect-segments (0: no
    # BLKIF_OP_INDIRECT, it is then an unknown op) and the status an unknown op gets
    # (dispatch_other_io: EOPNOTSUPP; 2005-2008 drivers answered BLKIF_RSP_ERROR).
    max_indirect_segments = MAX_INDIRECT_SEGMENTS
    unknown_op_status = BLKIF_RSP_EOPNOTSUPP

    def attach(self, be: Backend, t_ns: int) -> bool:
        ring = be.ring
        rsp_prod = ring.rsp_prod
        if ((ring.req_prod - rsp_prod) & MASK32) > ring.nr_ents:
            # xen_blkif_map: "if (req_prod - rsp_prod > size) goto fail" -> -EIO
            acts = be.sys.actions
            if acts is not None:
                acts.append(BindFailed(t_ns=t_ns, ring=be.sys.key, backend=be.instance, errno=EIO))
            return False
        be.map_at(t_ns, rsp_prod)
        return True

    def disconnect(self, be: Backend, t_ns: int, goal: str) -> None:
        be.stop(t_ns, goal, wait=True)

    def unbind(self, be: Backend, t_ns: int) -> None:
        be.stop(t_ns, "unbind", wait=True)

    def remove(self, be: Backend, t_ns: int) -> None:
        be.stop(t_ns, "remove", wait=True)

    def io_started(self, be: Backend, req: Req, t_ns: int) -> None:
        return None

    def io_done(self, be: Backend, req: Req, t_ns: int) -> None:
        return None

    def drained(self, be: Backend, t_ns: int) -> None:
        be.complete_goal(t_ns)

    def finished(self, be: Backend, t_ns: int, goal: str) -> None:
        if goal == "remove":
            be.publish_shutdown_done(t_ns)
            be.start_target(t_ns)


class LinuxBlkfront:
    """Modern Linux blkfront."""

    name = "linux-default"
    validates_responses = True

    def __init__(self) -> None:
        self.free: list[int] = []
        self.shadow: dict[int, Req] = {}

    def setup(self, fe: Frontend, nr_ents: int) -> None:
        # Popping from the end hands out 0, 1, 2, ... like the initial free list.
        self.free = list(range(nr_ents - 1, -1, -1))
        self.shadow = {}

    def log(self, fe: Frontend, req: Req, wanted_id: int | None) -> int:
        shadow = self.shadow
        if wanted_id is not None and wanted_id not in shadow:
            rid = wanted_id
        else:
            free = self.free
            rid = free.pop()
            # Ids handed out on request (replay) stay in the free list: skip them lazily.
            while rid in shadow:
                rid = free.pop()
        shadow[rid] = req
        return rid

    def retire(self, fe: Frontend, rsp_id: int) -> None:
        if self.shadow.pop(rsp_id, None) is not None:
            self.free.append(rsp_id)

    def recover(self, fe: Frontend) -> list[Req]:
        return [self.shadow[i].copy() for i in sorted(self.shadow)]

"""Seed 002: Linux xen-blkback, 2019 — "xen-blkback: support dynamic unbind/bind"
(Paul Durrant, v3 4/4).

``blkback-rebind-init`` (legacy): xen_blkif_map used BACK_RING_INIT, i.e. ``req_cons =
rsp_prod_pvt = 0``, whatever the live frontend's producers are; and without
``allow_rebind`` the unbind switches the backend to Closed. With the frontend far along,
the first pass of __do_block_io_op sees ``req_prod - rsp_prod_pvt > size`` and halts
(``backend-halted``: the guest's I/O hangs); early in the ring's life it re-reads old slots
(responses decoded as requests, already-answered requests executed again) and pushes
responses from index 0 (``implausible-response-producer``, ``duplicated-write``).

``blkback-rebind-attach`` (patched): read ``rsp_prod`` and ``req_prod`` from the page,
BACK_RING_ATTACH at ``rsp_prod`` (``req_cons = rsp_prod_pvt = rsp_prod``), fail with -EIO
when ``req_prod - rsp_prod > size``; ``allow_rebind``. Disconnect with I/O in flight waits
in both (that fix predates the seed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blktrace_xen.model.logics.linux import LinuxBlkback

if TYPE_CHECKING:
    from blktrace_xen.model.backend import Backend


class BlkbackRebindInit(LinuxBlkback):
    name = "blkback-rebind-init"

    def attach(self, be: Backend, t_ns: int) -> bool:
        be.map_at(t_ns, 0)  # BACK_RING_INIT: fresh counters, no plausibility check
        return True


class BlkbackRebindAttach(LinuxBlkback):
    name = "blkback-rebind-attach"

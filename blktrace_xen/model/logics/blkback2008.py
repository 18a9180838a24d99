"""Seed 004: Linux blkback + xend, 2008 — blkback_remove and the migration handoff
(xen-devel, Xen 3.1).

``blkback-2008-remove-nowait`` (legacy): blkback_remove -> backend_release returns at
``atomic_dec_and_test(&be->refcnt)`` while xenblkd still holds a reference and has I/O at
the disk; the device vanishes from xenstore, so xend unleashes the migrated guest on the
target at once. The source's outstanding writes land afterwards
(``write-after-handoff``; with the target writing the same sectors, ``lost-write``).

``blkback-2008-remove-wait`` (patched): blkback_remove waits on ``be->wq`` until
blkback_close has run blkif_disconnect and vbd_sync and cleared ``xenblkd``; xend's
``testDeviceComplete(io_done=True)`` loops until "shutdown-done" appears and only then
shuts the socket so the target starts.

Both are 2008 drivers: BACK_RING_INIT on connect, no RING_REQUEST_PROD_OVERFLOW check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blktrace_xen.model.logics.linux import LinuxBlkback

if TYPE_CHECKING:
    from blktrace_xen.model.backend import Backend


class Blkback2008(LinuxBlkback):
    checks_request_overflow = False

    def attach(self, be: Backend, t_ns: int) -> bool:
        be.map_at(t_ns, 0)
        return True


class Blkback2008RemoveNowait(Blkback2008):
    name = "blkback-2008-remove-nowait"

    def remove(self, be: Backend, t_ns: int) -> None:
        be.start_target(t_ns)  # the device is gone from xenstore: xend unleashes the target
        be.stop(t_ns, "remove", wait=True)  # xenblkd keeps running until its I/O is done

    def finished(self, be: Backend, t_ns: int, goal: str) -> None:
        return None


class Blkback2008RemoveWait(Blkback2008):
    name = "blkback-2008-remove-wait"

"""The registered logics: one module per seed, plus the modern Linux reference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blktrace_xen.model.logics.blkback2008 import Blkback2008RemoveNowait, Blkback2008RemoveWait
from blktrace_xen.model.logics.blkback2019 import BlkbackRebindAttach, BlkbackRebindInit
from blktrace_xen.model.logics.linux import LinuxBlkback, LinuxBlkfront
from blktrace_xen.model.logics.xbd2006 import (
    Xbd2006NoRecovery,
    Xbd2006RecoveryAsPosted,
    Xbd2006RecoveryFixed,
)
from blktrace_xen.model.logics.xbdback2005 import (
    XbdbackImmediate,
    XbdbackRefcount,
    XbdbackRefcountFixed,
)

__all__ = [
    "Blkback2008RemoveNowait",
    "Blkback2008RemoveWait",
    "BlkbackRebindAttach",
    "BlkbackRebindInit",
    "LinuxBlkback",
    "LinuxBlkfront",
    "Xbd2006NoRecovery",
    "Xbd2006RecoveryAsPosted",
    "Xbd2006RecoveryFixed",
    "XbdbackImmediate",
    "XbdbackRefcount",
    "XbdbackRefcountFixed",
    "all_specs",
]

if TYPE_CHECKING:
    from blktrace_xen.model.logic import LogicSpec


def all_specs() -> list[LogicSpec]:
    # Imported here: logic.py registers these specs when it is imported, so a user logic
    # file that imports logics.linux first must not need logic.py half-built.
    from blktrace_xen.model.logic import LogicSpec

    return [
        LogicSpec(
            name="linux-default",
            seed=None,
            kind="reference",
            doc="modern Linux blkback (ATTACH at rsp_prod, halts on a bogus req_prod, "
            "drains before unmapping) and blkfront (full shadow, re-issues all on "
            "resume, rejects bad responses)",
            paired=None,
            sides={"back": LinuxBlkback, "front": LinuxBlkfront},
        ),
        LogicSpec(
            name="xbdback-2005-immediate",
            seed="000",
            kind="legacy",
            doc="NetBSD xbdback: disconnect unmaps the ring at once, I/O still pending",
            paired="xbdback-2005-refcount",
            sides={"back": XbdbackImmediate},
        ),
        LogicSpec(
            name="xbdback-2005-refcount",
            seed="000",
            kind="patched",
            doc="the posted fix: refcount per I/O, DISCONNECTING, unmap and answer at zero",
            paired="xbdback-2005-immediate",
            sides={"back": XbdbackRefcount},
        ),
        LogicSpec(
            name="xbdback-2005-refcount-fixed",
            seed="000",
            kind="patched",
            doc="the posted fix plus re-arming the count on reconnect",
            paired="xbdback-2005-immediate",
            sides={"back": XbdbackRefcountFixed},
        ),
        LogicSpec(
            name="blkback-rebind-init",
            seed="002",
            kind="legacy",
            doc="blkback bind with BACK_RING_INIT (counters 0) under a live frontend",
            paired="blkback-rebind-attach",
            sides={"back": BlkbackRebindInit},
        ),
        LogicSpec(
            name="blkback-rebind-attach",
            seed="002",
            kind="patched",
            doc="BACK_RING_ATTACH at rsp_prod, -EIO if req_prod - rsp_prod > size",
            paired="blkback-rebind-init",
            sides={"back": BlkbackRebindAttach},
        ),
        LogicSpec(
            name="xbd-2006-norecovery",
            seed="003",
            kind="legacy",
            doc="NetBSD xbd: requests outstanding at suspend are forgotten",
            paired="xbd-2006-recovery-fixed",
            sides={"front": Xbd2006NoRecovery},
        ),
        LogicSpec(
            name="xbd-2006-recovery-as-posted",
            seed="003",
            kind="legacy",
            doc="the posted recovery ring: sector_number not shadowed",
            paired="xbd-2006-recovery-fixed",
            sides={"front": Xbd2006RecoveryAsPosted},
        ),
        LogicSpec(
            name="xbd-2006-recovery-fixed",
            seed="003",
            kind="patched",
            doc="recovery ring that shadows sector_number and checks retire",
            paired="xbd-2006-recovery-as-posted",
            sides={"front": Xbd2006RecoveryFixed},
        ),
        LogicSpec(
            name="blkback-2008-remove-nowait",
            seed="004",
            kind="legacy",
            doc="blkback_remove returns with I/O outstanding; target started at once",
            paired="blkback-2008-remove-wait",
            sides={"back": Blkback2008RemoveNowait},
        ),
        LogicSpec(
            name="blkback-2008-remove-wait",
            seed="004",
            kind="patched",
            doc="wait for xenblkd's I/O, publish shutdown-done, then start the target",
            paired="blkback-2008-remove-nowait",
            sides={"back": Blkback2008RemoveWait},
        ),
    ]

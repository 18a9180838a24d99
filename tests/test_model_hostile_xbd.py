"""A backend that invents responses must not crash the 2006 xbd recovery-ring logic.

The as-posted rec_ring_retire trusts the response id, so an invented response
for a free slot corrupts the free list; the C driver would scribble over
memory. The model must say so with a FrontendProtocolError (which replay turns
into a verdict), never an IndexError.
"""

from __future__ import annotations

import pytest

from blktrace_xen.errors import FrontendProtocolError
from blktrace_xen.model.events import BackConsume, BackRespond, FrontConsume, FrontSubmit
from blktrace_xen.model.ring import BLKIF_OP_WRITE
from blktrace_xen.model.system import Model


def _submit(t: int, sector: int) -> FrontSubmit:
    return FrontSubmit(t_ns=t, operation=BLKIF_OP_WRITE, sector_number=sector, nr_sectors=8)


def test_invented_response_corrupts_the_free_list_and_is_reported() -> None:
    model = Model(frontend="xbd-2006-recovery-as-posted", nr_ents=8, record_actions=False)
    model.feed(_submit(1, 0))
    model.feed(BackConsume(t_ns=2))
    # Slot 5 is free: the as-posted retire threads it into the free list a second time.
    model.feed(BackRespond(t_ns=3, id=5, operation=BLKIF_OP_WRITE))
    model.feed(FrontConsume(t_ns=4))
    with pytest.raises(FrontendProtocolError, match="free list corrupted"):
        for t in range(10, 30):
            model.feed(_submit(t, 8 * t))
            model.feed(BackConsume(t_ns=t))


def test_the_fixed_logic_ignores_the_invented_response() -> None:
    model = Model(frontend="xbd-2006-recovery-fixed", nr_ents=8, record_actions=False)
    model.feed(_submit(1, 0))
    model.feed(BackConsume(t_ns=2))
    model.feed(BackRespond(t_ns=3, id=5, operation=BLKIF_OP_WRITE))
    model.feed(FrontConsume(t_ns=4))
    for t in range(10, 14):
        model.feed(_submit(t, 8 * t))
    result = model.finish()
    assert "response-not-in-flight" in result.invariants()

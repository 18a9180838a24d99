"""Random workloads without control events: violation-free under every logic pairing, and
the disk oracle agrees with a plain last-writer model."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from blktrace_xen.model.events import BackComplete, BackConsume, FrontConsume, FrontSubmit
from blktrace_xen.model.logic import LOGICS
from blktrace_xen.model.ring import BLKIF_OP_READ, BLKIF_OP_WRITE
from blktrace_xen.model.system import Model

BACKS = sorted(n for n, s in LOGICS.items() if "back" in s.sides)
FRONTS = sorted(n for n, s in LOGICS.items() if "front" in s.sides)
KEY = (1, 51712, 0)


class Workload(RuleBasedStateMachine):
    model: Model
    t: int

    @initialize(
        back=st.sampled_from(BACKS),
        front=st.sampled_from(FRONTS),
        nr_ents=st.sampled_from([4, 32]),
        start=st.sampled_from([0, 2**32 - 3]),
    )
    def setup(self, back: str, front: str, nr_ents: int, start: int) -> None:
        self.model = Model(backend=back, frontend=front, nr_ents=nr_ents, start_idx=start)
        self.model.ring(KEY)
        self.t = 0
        self.last_writer: dict[int, int] = {}  # sector -> seq, in disk-completion order

    def tick(self) -> int:
        self.t += 10
        return self.t

    @property
    def sys(self):  # type: ignore[no-untyped-def]
        return self.model.rings[KEY]

    @precondition(
        lambda self: (
            (self.sys.frontend.req_prod_pvt - self.sys.frontend.rsp_cons) % 2**32
            < self.sys.ring.nr_ents
        )
    )
    @rule(write=st.booleans(), block=st.integers(0, 7), blocks=st.integers(1, 2))
    def submit(self, write: bool, block: int, blocks: int) -> None:
        self.model.feed(
            FrontSubmit(
                t_ns=self.tick(),
                operation=BLKIF_OP_WRITE if write else BLKIF_OP_READ,
                sector_number=8 * block,
                nr_sectors=8 * blocks,
            )
        )

    @rule()
    def back_consume(self) -> None:
        self.model.feed(BackConsume(t_ns=self.tick()))

    @precondition(lambda self: self.sys.backend.inflight)
    @rule(data=st.data())
    def back_complete(self, data: st.DataObject) -> None:
        req = data.draw(
            st.sampled_from(sorted(self.sys.backend.inflight.values(), key=lambda r: r.seq))
        )
        self.model.feed(BackComplete(t_ns=self.tick(), seq=req.seq))
        if req.operation == BLKIF_OP_WRITE:
            for s in range(req.sector_number, req.sector_number + req.nr_sectors):
                self.last_writer[s] = req.seq

    @rule()
    def front_consume(self) -> None:
        self.model.feed(FrontConsume(t_ns=self.tick()))

    @invariant()
    def no_violation(self) -> None:
        assert self.model.violations == []

    @invariant()
    def oracle_matches_last_writer(self) -> None:
        assert self.model.disk is not None
        assert self.model.disk.media == self.last_writer

    def teardown(self) -> None:
        if hasattr(self, "model"):
            res = self.model.finish()
            assert res.violations == []


Workload.TestCase.settings = settings(
    derandomize=True, max_examples=60, stateful_step_count=40, deadline=None
)
TestWorkload = Workload.TestCase

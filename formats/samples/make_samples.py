"""Build the small sample xentrace dump shipped for the quickstart and the tests.

Run ``python formats/samples/make_samples.py`` to regenerate ``small.xentrace``
(deterministic: same bytes every time). Two pCPUs running a dom0 and a guest
doing block I/O with non-persistent grants: scheduler switches and runstate
changes, hypercalls, grant map/unmap, one lost-records record, one wrap filler,
and TRC_GUEST records (a blkif request/response pair plus an unknown minor).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from blktrace_xen.encode.xentrace import (  # noqa: E402
    TraceRecord,
    lost_records_record,
    wrap_buffer_record,
    write_xentrace,
)
from blktrace_xen.structs import xentrace as xt  # noqa: E402

BLKIF_REQ_PUSH = 0x0800FB01
BLKIF_RSP_PUSH = 0x0800FB03


def sample_records() -> list[TraceRecord]:
    rnd = random.Random(20240517)
    recs: list[TraceRecord] = []
    tsc = [1_000_000_000, 1_000_000_500]
    for step in range(200):
        cpu = step % 2
        tsc[cpu] += rnd.randint(500, 5000)
        t = tsc[cpu]
        dom = 1 if cpu == 1 else 0
        recs.append(TraceRecord(cpu, t, xt.TRC_SCHED_SWITCH, (0x7FFF, cpu, dom, 0)))
        recs.append(TraceRecord(cpu, t + 10, xt.TRC_SCHED_RUNSTATE_CHANGE | 0x10, (dom << 16,)))
        recs.append(TraceRecord(cpu, t + 40, xt.TRC_PV_HYPERCALL_V2, (0x10000014, 0, 1)))
        if cpu == 1 and step % 10 == 1:
            ident = step // 10
            recs.append(TraceRecord(1, None, BLKIF_REQ_PUSH, (1, 51712, ident, ident, 0, 1, 8)))
            recs.append(TraceRecord(0, t + 60, xt.TRC_MEM_PAGE_GRANT_MAP, (1,)))
            recs.append(TraceRecord(0, t + 90, xt.TRC_MEM_PAGE_GRANT_UNMAP, (1,)))
            recs.append(TraceRecord(1, None, BLKIF_RSP_PUSH, (1, 51712, ident, ident, 0, 1)))
        if step == 120:
            recs.append(lost_records_record(0, t + 200, 17, 0, 0, t + 100))
            recs.append(wrap_buffer_record(0, 40, t + 250))
        if step == 150:
            recs.append(TraceRecord(1, None, xt.TRC_GUEST | 0x123, (0xDEADBEEF,)))
        tsc[cpu] = max(tsc[cpu], t + 300)
    return recs


def main() -> None:
    out = HERE / "small.xentrace"
    n = write_xentrace(out, sample_records(), window_records=64)
    print(f"{out}: {n} bytes")


if __name__ == "__main__":
    main()

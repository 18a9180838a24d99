"""Model throughput: input events per second through run(), per logic pairing.

python benchmarks/bench_model.py [N_IOS]
Workload: iodepth-16 random 4k read/write mix on one 32-slot ring; each I/O is four
events (submit, consume, complete, consume). Events are built before timing.
"""

from __future__ import annotations

import random
import sys
import time

from blktrace_xen.model.events import BackComplete, BackConsume, FrontConsume, FrontSubmit
from blktrace_xen.model.system import run


def workload(n_ios: int, depth: int = 16) -> list[object]:
    rng = random.Random(1)
    evs: list[object] = []
    t = 0
    seq = 0
    while seq < n_ios:
        batch = range(seq, min(seq + depth, n_ios))
        for _ in batch:
            t += 1
            evs.append(
                FrontSubmit(
                    t_ns=t,
                    operation=rng.randrange(2),
                    sector_number=8 * rng.randrange(1 << 18),
                    nr_sectors=8,
                )
            )
        t += 1
        evs.append(BackConsume(t_ns=t))
        order = list(batch)
        rng.shuffle(order)
        for q in order:
            t += 1
            evs.append(BackComplete(t_ns=t, seq=q))
        t += 1
        evs.append(FrontConsume(t_ns=t))
        seq = batch.stop
    return evs


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    evs = workload(n)
    for back, front in [
        ("linux-default", "linux-default"),
        ("xbdback-2005-refcount", "xbd-2006-recovery-as-posted"),
    ]:
        for verify, actions in [(False, False), (True, False), (True, True)]:
            t0 = time.perf_counter()
            res = run(
                evs,
                backend=back,
                frontend=front,
                verify_data=verify,  # type: ignore[arg-type]
                record_actions=actions,
            )
            dt = time.perf_counter() - t0
            assert not res.violations
            print(
                f"{back:24} {front:28} verify={verify!s:5} actions={actions!s:5} "
                f"{len(evs):>8} events {dt:6.2f} s {len(evs) / dt / 1e6:5.2f} M ev/s"
            )


if __name__ == "__main__":
    main()

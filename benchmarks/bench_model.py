"""Model throughput: input events per second through run(), per logic pairing.

python benchmarks/bench_model.py [N_IOS]
Workload: iodepth-16 random 4k read/write mix on one 32-slot ring; each I/O is four
events (submit, consume, complete, consume). Events are built before timing.

First linux-default in the three modes (oracle/actions off/on) and with the oracle
deferred (judged in bulk at the end, as replay runs it), then every registered
logic (a one-sided logic paired with linux-default's other half) with the disk oracle on
and actions off, which is how replay runs. Each figure is the best of 3 runs, given both
as wall time and as the process's CPU time (the wall figure on a shared machine mostly
measures the neighbours).
"""

from __future__ import annotations

import random
import sys
import time

from blktrace_xen.model.events import BackComplete, BackConsume, FrontConsume, FrontSubmit
from blktrace_xen.model.logic import LOGICS
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


def measure(
    evs: list[object], back: str, front: str, verify: bool, actions: bool, mode: str = "step"
) -> None:
    wall = cpu = float("inf")
    for _ in range(3):
        w0, c0 = time.perf_counter(), time.process_time()
        res = run(
            evs,  # type: ignore[arg-type]
            backend=back,
            frontend=front,
            verify_data=verify,
            record_actions=actions,
            disk_mode=mode,
        )
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
        assert not res.violations
    n = len(evs)
    print(
        f"{back:28} {front:28} verify={verify!s:5} actions={actions!s:5} disk={mode:8} "
        f"{n:>8} events "
        f"wall {wall:5.2f} s {n / wall / 1e6:5.2f} M ev/s  "
        f"cpu {cpu:5.2f} s {n / cpu / 1e6:5.2f} M ev/s"
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    evs = workload(n)
    for verify, actions in [(False, False), (True, False), (True, True)]:
        measure(evs, "linux-default", "linux-default", verify, actions)
    measure(evs, "linux-default", "linux-default", True, False, "deferred")
    for name, spec in LOGICS.items():
        if name == "linux-default":
            continue
        back = name if "back" in spec.sides else "linux-default"
        front = name if "front" in spec.sides else "linux-default"
        measure(evs, back, front, True, False)
    measure(evs, "xbdback-2005-refcount", "xbd-2006-recovery-as-posted", True, False)


if __name__ == "__main__":
    main()

"""The capture agent's cost to the guest's I/O rate, measured on the real Xen lab.

usage: python benchmarks/bench_capture_overhead.py OUT [OUT ...]

Each OUT is a realxen lab run's ``share/out`` folder of ``CONFIG=lab/config-overhead.sh``
(detach at the usual rate, then steady with blkload at rate=0: as fast as the emulated
host goes), made with ``EXTRA=lab/agent`` or without it; alternate them for several
rounds. With the agent, bpftrace compiles during detach, so it is attached before the
steady domain starts (checked: the capture holds the steady ring's connect). The rate
is blkback's own request counters over CLOCK_MONOTONIC from steady's ``connected`` to
its ``before-shutdown`` step (vbd-state.txt), the same window in both kinds of run.
Prints one line per run and the ratio of the medians, and the capture's lost events.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

_STEP = re.compile(
    r"monotonic_ns=(\d+) step=(\S+) .*blkback=rd_req=(\d+),wr_req=(\d+),f_req=(\d+),ds_req=(\d+)"
)


def _steps(path: Path) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for line in path.read_text().splitlines():
        m = _STEP.search(line)
        if m:
            out.setdefault(
                m.group(2), (int(m.group(1)), sum(int(m.group(i)) for i in (3, 4, 5, 6)))
            )
    return out


def _agent(capture: Path, domid: int) -> int:
    """Lost events of the capture; fails unless it saw ``domid``'s ring connect."""
    import polars as pl

    from blktrace_xen.decode.agentcap import agent_tables
    from blktrace_xen.decode.ringcap import read_ringcap
    from blktrace_xen.structs.agentcap import Kind, RingReason

    t = agent_tables(read_ringcap(capture).agent)
    rings = t.get(Kind.RING)
    seen = rings.filter((pl.col("reason") == RingReason.CONNECT) & (pl.col("domid") == domid))
    if seen.is_empty():
        raise SystemExit(f"{capture}: the agent did not see domain {domid} connect")
    return int(t.get(Kind.LOST)["count"].sum() or 0)


def rate(out: Path) -> tuple[bool, float, int | None]:
    """(with the agent, requests per second in steady's window, lost events)."""
    text = (out / "steady" / "vbd-state.txt").read_text()
    steps = _steps(out / "steady" / "vbd-state.txt")
    start, end = steps["connected"], steps["before-shutdown"]
    cap = out / "detach" / "agent.pcapng"
    lost = None
    if cap.exists():
        m = re.search(r" domid=(\d+) ", text)
        assert m is not None
        lost = _agent(cap, int(m.group(1)))
    return cap.exists(), (end[1] - start[1]) / ((end[0] - start[0]) / 1e9), lost


def main(args: list[str]) -> None:
    runs = {True: [], False: []}  # type: dict[bool, list[float]]
    for a in args:
        agent, r, lost = rate(Path(a))
        runs[agent].append(r)
        print(f"{'with' if agent else 'without':7} {r:8.1f} req/s  lost={lost}  {a}")
    w, wo = statistics.median(runs[True]), statistics.median(runs[False])
    print(
        f"median with {w:.1f}, without {wo:.1f} req/s: {100 * (1 - w / wo):+.1f} % with the agent"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

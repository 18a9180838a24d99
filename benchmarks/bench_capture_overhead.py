"""The capture agent's cost to the guest's I/O rate, measured on the real Xen lab.

usage: python benchmarks/bench_capture_overhead.py OUT [OUT ...]

Each OUT is a realxen lab run's ``share/out`` folder of ``CONFIG=lab/config-overhead.sh``
(the steady scenario, blkload at rate=0: as fast as the emulated host goes), made with
``EXTRA=lab/agent`` or without it; alternate them for several rounds. The rate is
blkback's own request counters over CLOCK_MONOTONIC:

* with the agent: from its first sight of the ring (the counters the probe read, in the
  capture) to ``before-shutdown`` (vbd-state.txt), so only time with every probe attached;
* without: from ``connected`` to ``before-shutdown``.

Prints one line per run and the ratio of the medians. Lost events come from the capture.
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


def _first_sight(capture: Path) -> tuple[int, int, int]:
    """(mono ns, counters total, lost events) at the agent's first sight of the ring."""
    import polars as pl

    from blktrace_xen.decode.agentcap import agent_tables
    from blktrace_xen.decode.ringcap import read_ringcap
    from blktrace_xen.structs.agentcap import Kind, RingReason

    t = agent_tables(read_ringcap(capture).agent)
    r = (
        t.get(Kind.RING)
        .filter(pl.col("reason") == RingReason.FIRST_SIGHT)
        .sort("ns")
        .row(0, named=True)
    )
    lost = int(t.get(Kind.LOST)["count"].sum() or 0)
    return r["ns"], r["st_rd_req"] + r["st_wr_req"] + r["st_f_req"] + r["st_ds_req"], lost


def rate(out: Path) -> tuple[bool, float, int | None]:
    """(with the agent, requests per second in the window, lost events)."""
    sd = out / "steady"
    steps = _steps(sd / "vbd-state.txt")
    end = steps["before-shutdown"]
    cap = sd / "agent.pcapng"
    if cap.exists():
        ns, total, lost = _first_sight(cap)
        start: tuple[int, int] = (ns, total)
    else:
        start, lost = steps["connected"], None
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

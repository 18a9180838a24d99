"""The capture agent's cost to the guest's I/O rate, measured on the real Xen lab.

usage: python benchmarks/bench_capture_overhead.py WITH_AGENT_OUT WITHOUT_AGENT_OUT [...]

Each argument is a realxen lab run's ``share/out`` folder of ``CONFIG=lab/config-overhead.sh``
(steady, blkload at rate=0), made with ``EXTRA=lab/agent`` (with) or without it. The
rate is blkback's own request counters (vbd-state.txt) over the TSC between the step the
agent was running at (``agent-started``; ``connected`` without an agent) and
``before-shutdown``; arguments alternate with/without for several rounds. Prints one line
per run and the ratio of the medians; dropped events come from the agent's capture.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

CPU_MHZ = 2596.125  # the lab's `xl info` cpu_mhz
_STEP = re.compile(r"tsc=(\d+).* step=(\S+) .*blkback=rd_req=(\d+),wr_req=(\d+),f_req=(\d+)")


def _steps(path: Path) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for line in path.read_text().splitlines():
        m = _STEP.search(line)
        if m:
            out[m.group(2)] = (int(m.group(1)), sum(int(m.group(i)) for i in (3, 4, 5)))
    return out


def rate(out: Path) -> tuple[float, int | None]:
    """(requests per second in the window, lost events or None without an agent)."""
    steps = _steps(out / "steady" / "vbd-state.txt")
    start = steps.get("agent-started") or steps["connected"]
    end = steps["before-shutdown"]
    secs = (end[0] - start[0]) / (CPU_MHZ * 1e6)
    lost = None
    err = out / "steady" / "capture.out"
    if err.exists():
        m = re.search(r"lost events: (\d+)", err.read_text())
        lost = int(m.group(1)) if m else None
    return (end[1] - start[1]) / secs, lost


def main(args: list[str]) -> None:
    with_agent, without = [], []
    for i, a in enumerate(args):
        r, lost = rate(Path(a))
        (with_agent if i % 2 == 0 else without).append(r)
        print(f"{'with' if i % 2 == 0 else 'without':7} {r:8.1f} req/s  lost={lost}  {a}")
    w, wo = statistics.median(with_agent), statistics.median(without)
    print(f"median with {w:.1f}, without {wo:.1f}: {100 * (1 - w / wo):+.1f} % loss with the agent")


if __name__ == "__main__":
    main(sys.argv[1:])

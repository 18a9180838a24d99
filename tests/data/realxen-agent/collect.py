"""Copy what the tests use out of a realxen lab run with the capture agent (lab/README.md).

usage: python tests/data/realxen-agent/collect.py RUN_OUT_DIR

One capture covers the whole run (lab/agent/agent-start.sh starts it in the first
scenario): the agent's pcapng and bpftrace's raw lines, xz-compressed (the tests
decompress them). Per scenario: blkback's counters, the vbd state log, the guest's
result lines. And the run's timeline.
"""

from __future__ import annotations

import lzma
import shutil
import sys
from pathlib import Path

SCENARIOS = ("steady", "nopersist", "detach", "saverestore", "rebind")
HERE = Path(__file__).resolve().parent


def main(out: Path) -> None:
    first = out / SCENARIOS[0]
    for name in ("agent.pcapng", "agent-raw.txt"):
        data = (first / name).read_bytes()
        (HERE / f"{name}.xz").write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    for name in ("capture.out", "capture.err"):
        shutil.copy(first / name, HERE / name)
    for sc in SCENARIOS:
        src, dst = out / sc, HERE / sc
        dst.mkdir(exist_ok=True)
        for name in ("blkback-stats.txt", "vbd-state.txt"):
            if (src / name).exists():
                shutil.copy(src / name, dst / name)
        console = (src / "domU-console.log").read_text(errors="replace").splitlines()
        (dst / "domU-results.txt").write_text(
            "\n".join(ln for ln in console if "RX: " in ln) + "\n"
        )
    shutil.copy(out / "timeline.txt", HERE / "timeline.txt")
    print(sum(f.stat().st_size for f in HERE.rglob("*") if f.is_file()), "bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

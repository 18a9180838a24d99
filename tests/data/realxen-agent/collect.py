"""Copy what the tests use out of a realxen lab run with the capture agent (lab/README.md).

usage: python tests/data/realxen-agent/collect.py RUN_OUT_DIR

Per scenario: the agent's capture and bpftrace's raw lines (xz-compressed: the tests
decompress them), blkback's counters, the vbd state log and the guest's result lines.
"""

from __future__ import annotations

import lzma
import shutil
import sys
from pathlib import Path

SCENARIOS = ("steady", "nopersist", "detach", "saverestore", "rebind")
HERE = Path(__file__).resolve().parent


def main(out: Path) -> None:
    for sc in SCENARIOS:
        src, dst = out / sc, HERE / sc
        if not src.is_dir():
            print(f"{sc}: missing in {out}")
            continue
        dst.mkdir(exist_ok=True)
        for name in ("agent.pcapng", "agent-raw.txt"):
            data = (src / name).read_bytes()
            (dst / f"{name}.xz").write_bytes(lzma.compress(data, preset=9))
        for name in ("blkback-stats.txt", "vbd-state.txt", "capture.out", "capture.err"):
            if (src / name).exists():
                shutil.copy(src / name, dst / name)
        console = (src / "domU-console.log").read_text(errors="replace").splitlines()
        (dst / "domU-results.txt").write_text(
            "\n".join(ln for ln in console if "RX: " in ln) + "\n"
        )
        print(sc, sum(f.stat().st_size for f in dst.iterdir()), "bytes")
    shutil.copy(out / "timeline.txt", HERE / "timeline.txt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

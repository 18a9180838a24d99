"""Rebuild the input files of the replay corpus from the synthesizer.

Usage: python replays/regenerate.py [CASE...]

Each synthesized case keeps the files its ``[synth]`` table lists in ``keep`` (default
``trace.xentrace``, the replay input, and ``truth.json``, what the simulation recorded,
for people; the tests judge from the trace or capture). The
``case.toml`` and ``NOTES.md`` of a case are written by people and left alone; each
``case.toml`` carries the exact command (``regenerate``) that this script runs for it.
Same seed, same bytes.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEEP = ("trace.xentrace", "truth.json")


def regenerate(case_dir: Path) -> list[Path]:
    """Run the case's ``synth`` recipe and copy the kept files into ``case_dir``."""
    from blktrace_xen.synth.scenarios import synthesize

    spec = tomllib.loads((case_dir / "case.toml").read_text())
    synth = spec.get("synth")
    if synth is None:
        return []  # a user's production trace: nothing to regenerate
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(
            synth["scenario"],
            Path(tmp),
            seed=int(synth.get("seed", 0)),
            duration_s=float(synth.get("duration", 0.2)),
            iops=int(synth.get("iops", 2000)),
            logic=synth.get("logic"),
        )
        out = []
        for name in synth.get("keep", KEEP):
            shutil.copyfile(Path(tmp) / name, case_dir / name)
            out.append(case_dir / name)
    return out


def main(argv: list[str]) -> None:
    cases = [HERE / c for c in argv] if argv else sorted(p.parent for p in HERE.glob("*/case.toml"))
    for case in cases:
        for path in regenerate(case):
            print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main(sys.argv[1:])

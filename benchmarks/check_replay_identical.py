"""Check that replay gives the same results as a saved baseline.

Inputs: every case in ``replays/`` (its files loaded as the corpus test loads them) and
the bench_replay steady trace at 20 k I/Os on one ring and at 10 k on four. Each is
replayed under every registered logic (paired as ``bench_replay --all`` pairs them), under
two user logics loaded from a file as ``--logic path.py:Class`` would (hooks that break
an invariant now and then, so a hook the engine failed to call changes the result),
oracle on and off. For every run it hashes the violations, final ring states, disk
report, skips and counts. Save a baseline from the tree before a change, then compare
after it; the baseline keeps the inputs (pickled Streams), so a change in the loaders
between the two runs does not show up as a difference in replay:

    python benchmarks/check_replay_identical.py save /tmp/replay-baseline
    python benchmarks/check_replay_identical.py compare /tmp/replay-baseline

Keep the baseline outside the repository. Exit status 1 names every run that differs.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import pickle
import sys
import tempfile
import tomllib
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for bench_replay

from bench_replay import all_pairings, steady

from blktrace_xen.replay.engine import EngineResult, run_logic
from blktrace_xen.replay.inputs import build_input
from blktrace_xen.streams import Streams
from blktrace_xen.streams.load import load_streams

REPLAYS = Path(__file__).resolve().parent.parent / "replays"
BENCH_IOS = 20_000

# User logics (as a user's path.py:Class): per-I/O hooks with visible effects, and a
# frontend that hands out ids its own way and is not a LinuxBlkfront subclass.
USER_LOGICS = """
from blktrace_xen.model.logics.linux import LinuxBlkback


class NoisyBack(LinuxBlkback):
    name = "user-noisy"

    def io_started(self, be, req, t_ns):
        if req.seq % 97 == 5:
            be.violate(t_ns, "user-started", req.id, None, f"started #{req.seq}")

    def io_done(self, be, req, t_ns):
        if req.seq % 89 == 7:
            be.violate(t_ns, "user-done", req.id, None, f"done #{req.seq} {req.operation}")


class StackFront:
    name = "user-stack"
    validates_responses = False

    def setup(self, fe, nr_ents):
        self.free = list(range(nr_ents))
        self.shadow = {}

    def log(self, fe, req, wanted_id):
        rid = self.free.pop() if self.free else 1000 + req.seq
        self.shadow[rid] = req
        return rid

    def retire(self, fe, rsp_id):
        if self.shadow.pop(rsp_id, None) is not None and rsp_id < 1000:
            self.free.append(rsp_id)

    def recover(self, fe):
        return []
"""


def _inputs() -> list[tuple[str, Streams]]:
    out = []
    for toml in sorted(REPLAYS.glob("*/case.toml")):
        case = toml.parent
        spec = tomllib.loads(toml.read_text())["case"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            streams = load_streams([case / p for p in spec["inputs"]], cpu_mhz=spec.get("cpu_mhz"))
        out.append((case.name, streams))
    out.append((f"bench-steady-{BENCH_IOS}", steady(BENCH_IOS, 8)))
    # Rows alternating between four rings (the engine keeps per-ring state).
    out.append((f"bench-steady-{BENCH_IOS // 2}-4-rings", steady(BENCH_IOS // 2, 8, rings=4)))
    return out


def _digest(r: EngineResult) -> str:
    return hashlib.sha256(repr(r.outcome()).encode()).hexdigest()


def _run_all(inputs: list[tuple[str, Streams]], user_file: Path) -> dict[str, str]:
    pairs = all_pairings()
    pairs += [
        (f"{user_file}:NoisyBack", "linux-default"),
        ("linux-default", f"{user_file}:StackFront"),
        (f"{user_file}:NoisyBack", f"{user_file}:StackFront"),
    ]
    out: dict[str, str] = {}
    for name, streams in inputs:
        inp = build_input(streams)
        for back, front in pairs:
            for verify in (True, False):
                r = run_logic(inp, backend=back, frontend=front, verify_data=verify)
                label = (
                    f"{name} | {Path(back).name} / {Path(front).name} | "
                    f"oracle {'on' if verify else 'off'}"
                )
                out[label] = _digest(r)
                del r
                gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("save", "compare"))
    ap.add_argument("dir", type=Path)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    inputs_file = args.dir / "inputs.pickle"
    digests_file = args.dir / "digests.pickle"
    if args.mode == "save":
        inputs = _inputs()
        inputs_file.write_bytes(pickle.dumps(inputs))
    else:
        inputs = pickle.loads(inputs_file.read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        user_file = Path(tmp) / "user_logics.py"
        user_file.write_text(USER_LOGICS)
        digests = _run_all(inputs, user_file)
    if args.mode == "save":
        digests_file.write_bytes(pickle.dumps(digests))
        print(f"saved {len(digests)} runs over {len(inputs)} inputs to {args.dir}")
        return
    base: dict[str, str] = pickle.loads(digests_file.read_bytes())
    bad = [k for k in sorted(set(base) | set(digests)) if base.get(k) != digests.get(k)]
    for k in bad:
        print(f"DIFFERS: {k}")
    print(f"{len(digests) - len(bad)} of {len(base)} runs identical")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

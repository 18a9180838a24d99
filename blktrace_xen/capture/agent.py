"""``blktrace-xen capture``: run the bpftrace program in dom0, write its events to a ring capture.

The only part of blktrace-xen that runs inside dom0. It checks what the probes
need (root, xen-blkback loaded, module BTF, the functions traceable), starts
bpftrace on the generated program, turns every output line into an agent
record (:mod:`blktrace_xen.capture.lines`) and appends it to the pcapng file as
it comes, with the TSC calibrated beside it every second. SIGINT, SIGTERM and
``seconds`` stop it cleanly (bpftrace drains its buffers, the last records are
written, the stop is recorded); a killed agent leaves every complete block
readable. Events bpftrace reports lost are recorded and counted, never silent.
"""

from __future__ import annotations

import os
import platform
import re
import selectors
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from blktrace_xen import __version__
from blktrace_xen.capture.clock import TscReader
from blktrace_xen.capture.lines import LineDecoder, Record
from blktrace_xen.capture.probes import (
    MODULE,
    PROBES,
    RSP_ENTRY_VARIANTS,
    Probe,
    probe_at_line,
    program,
    traceable,
)
from blktrace_xen.encode.ringcap import RingcapWriter
from blktrace_xen.errors import CaptureError
from blktrace_xen.structs.agentcap import (
    BODY_FMT,
    HEAD_FMT,
    UNKNOWN_U16,
    UNKNOWN_U32,
    AgentWhat,
    Kind,
    RingReason,
)

# Where the kernel's files are read from (tests point it at a fake tree).
SYS = Path("/sys")
_TRACING: Final = ("kernel/tracing", "kernel/debug/tracing")
_LOST_RE: Final = re.compile(r"Lost (\d+) events")
_ATTACH_RE: Final = re.compile(r"^Attaching (\d+) probes?")
_CLOCK_EVERY_S: Final = 1.0
# bpftrace compiles in seconds on hardware, ~4 minutes in the lab's emulated dom0 and
# longer when the guests load it; past this the start is taken as hung.
_ATTACH_TIMEOUT_S: Final = 900.0
_MIN_KERNEL: Final = (5, 11)  # casts to xen-blkback's types need module BTF (5.11)
# bpftrace's per-CPU buffer, in pages: the default (64) overflows in bursts.
_PERF_RB_PAGES: Final = "1024"
_RING_BODY: Final = struct.Struct(BODY_FMT[Kind.RING])
_RING_REASON: Final = 5  # rsp_prod_pvt, req_cons, req_prod, rsp_prod, nr_ring_pages, reason


@dataclass(slots=True)
class CaptureStats:
    """What a capture did (printed at stop and kept in the file)."""

    records: int = 0
    lost: int = 0
    unparsed: int = 0
    filtered: int = 0
    rings: set[tuple[int, int, int]] = field(default_factory=set)
    probes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stop_reason: str = ""


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def available_functions() -> set[str] | None:
    """Lines of ftrace's available_filter_functions, None when tracefs is not mounted."""
    for base in _TRACING:
        text = _read(SYS / base / "available_filter_functions")
        if text is not None:
            return {line.strip() for line in text.splitlines()}
    return None


def choose_probes(available: set[str]) -> tuple[tuple[Probe, ...], list[str]]:
    """The probes that can attach, and a sentence per probe that cannot (what is lost)."""
    chosen: list[Probe] = []
    missing: list[str] = []
    for p in PROBES:
        if traceable(available, p):
            chosen.append(p)
            continue
        where = f"{p.function} ({p.module or 'vmlinux'})"
        if p.required:
            raise CaptureError(
                f"{where} cannot be traced on this kernel (inlined or renamed): {p.lost_without}"
            )
        missing.append(f"{where} not traceable: no {p.lost_without}")
    return tuple(chosen), missing


def preflight(bpftrace: str) -> tuple[tuple[Probe, ...], list[str]]:
    """Refuse clearly when the capture cannot work here; else the probes to use."""
    if os.geteuid() != 0:
        raise CaptureError("capture must run as root in dom0 (it loads eBPF programs)")
    if _kernel_version() < _MIN_KERNEL:
        raise CaptureError(
            f"kernel {platform.release()} is older than 5.11: no BTF for module functions"
        )
    if not (SYS / "module" / MODULE).exists():
        raise CaptureError("xen-blkback is not loaded (modprobe xen-blkback), or this is no dom0")
    if not (SYS / "kernel" / "btf" / MODULE).exists():
        raise CaptureError(
            f"no BTF for {MODULE} (/sys/kernel/btf/{MODULE}): kernel without "
            "CONFIG_DEBUG_INFO_BTF_MODULES"
        )
    if not _which(bpftrace):
        raise CaptureError(f"{bpftrace} not found: install bpftrace (Debian: apt install bpftrace)")
    available = available_functions()
    if available is None:
        raise CaptureError("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")
    return choose_probes(available)


def _which(cmd: str) -> bool:
    if "/" in cmd:
        return os.access(cmd, os.X_OK)
    return any(os.access(Path(d) / cmd, os.X_OK) for d in os.environ.get("PATH", "").split(":"))


def check_domain(domain: int) -> None:
    """Refuse a domain that has no block backend device in this dom0."""
    devices = SYS / "bus" / "xen-backend" / "devices"
    if devices.is_dir() and any(devices.glob(f"vbd-{domain}-*")):
        return
    try:
        out = subprocess.run(
            ["xenstore-read", f"/local/domain/{domain}/name"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode == 0:
            return
    except (OSError, subprocess.TimeoutExpired):
        pass
    raise CaptureError(
        f"domain {domain}: no such domain (no vbd-{domain}-* backend, "
        f"no /local/domain/{domain} in xenstore)"
    )


_HEAD = struct.Struct(HEAD_FMT)


def _pack(kind: Kind, *values: int, text: str = "") -> bytes:
    """A record the agent writes itself (no ring): its head, body and text."""
    head = _HEAD.pack(kind, 0, UNKNOWN_U16, UNKNOWN_U32, UNKNOWN_U16, 0, os.getpid(), 0, 0, 0)
    return head + struct.pack(BODY_FMT[kind], *values) + text.encode()


def _pack_agent(what: AgentWhat, text: str) -> bytes:
    return _pack(Kind.AGENT, what, 0, text=text)


def backend_counters() -> str:
    """blkback's own request counters per vbd, as sysfs shows them (ground truth)."""
    rows = []
    for d in sorted((SYS / "bus" / "xen-backend" / "devices").glob("vbd-*")):
        stats = d / "statistics"
        if not stats.is_dir():
            continue
        vals = " ".join(
            f"{n}={(_read(stats / n) or '?').strip()}"
            for n in ("rd_req", "wr_req", "f_req", "ds_req", "oo_req")
        )
        rows.append(f"{d.name} {vals}")
    return "; ".join(rows)


@dataclass(slots=True)
class _Filter:
    domain: int | None
    vbd: int | None

    def keep(self, record: bytes) -> bool:
        if self.domain is None and self.vbd is None:
            return True
        _, _, domid, vdev, *_ = _HEAD.unpack_from(record)
        if self.domain is not None and domid not in (self.domain, UNKNOWN_U16):
            return False
        return self.vbd is None or vdev in (self.vbd, UNKNOWN_U32)


class _Sink:
    """Writes records; reads xenstore for rings as they connect."""

    def __init__(
        self,
        writer: RingcapWriter,
        iface: int,
        keep: _Filter,
        stats: CaptureStats,
        xenstore: Callable[[int, int], Iterable[tuple[str, str]]] | None,
    ) -> None:
        self.writer = writer
        self.iface = iface
        self.xs_iface = writer.add_xenstore() if xenstore is not None else None
        self.keep = keep
        self.stats = stats
        self.xenstore = xenstore
        self._connected: set[tuple[int, int, int]] = set()

    def write(self, records: Iterable[Record]) -> None:
        for ns, rec in records:
            if not self.keep.keep(rec):
                self.stats.filtered += 1
                continue
            self.writer.write_agent(self.iface, ns, rec)
            self.stats.records += 1
            kind, _, domid, vdev, queue, _, _, ring, *_ = _HEAD.unpack_from(rec)
            if kind in (Kind.RSP_ENTRY, Kind.RING, Kind.CONSUME):
                self.stats.rings.add((domid, vdev, queue))
                if kind == Kind.RING and self.xenstore is not None:
                    reason = _RING_BODY.unpack_from(rec, _HEAD.size)[_RING_REASON]
                    if reason == RingReason.CONNECT and (domid, vdev, ring) not in self._connected:
                        self._connected.add((domid, vdev, ring))
                        self._xenstore(ns, domid, vdev)

    def _xenstore(self, ns: int, domid: int, vdev: int) -> None:
        assert self.xenstore is not None and self.xs_iface is not None
        for path, value in self.xenstore(domid, vdev):
            self.writer.write_xenstore(ns, path, value, iface=self.xs_iface)


def read_vbd_xenstore(domid: int, vdev: int) -> list[tuple[str, str]]:
    """The frontend's and backend's vbd nodes (ring-ref, event-channel, protocol, state ...)."""
    out: list[tuple[str, str]] = []
    for base in (
        f"/local/domain/{domid}/device/vbd/{vdev}",
        f"/local/domain/0/backend/vbd/{domid}/{vdev}",
    ):
        try:
            res = subprocess.run(
                ["xenstore-ls", "-f", base], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in res.stdout.splitlines():
            path, sep, value = line.partition(" = ")
            if sep:
                out.append((path.strip(), value.strip().strip('"')))
    return out


def _split_lines(carry: bytes, data: bytes) -> tuple[list[str], bytes]:
    buf = carry + data
    *lines, rest = buf.split(b"\n")
    return [ln.decode("utf-8", "replace") for ln in lines], rest


# Probes this kernel refused before, so that a later capture does not spend its
# first minute recompiling programs that cannot load (bpftrace compiles slowly).
REFUSED_CACHE = Path("/var/cache/blktrace-xen/refused-probes.json")


def _refused_before() -> dict[str, str]:
    import json

    try:
        data = json.loads(REFUSED_CACHE.read_text())
    except (OSError, ValueError):
        return {}
    got = data.get(platform.release()) if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in got.items()} if isinstance(got, dict) else {}


def _remember_refused(refused: dict[str, str]) -> None:
    import json

    try:
        data = json.loads(REFUSED_CACHE.read_text()) if REFUSED_CACHE.exists() else {}
        if not isinstance(data, dict):
            data = {}
        data[platform.release()] = refused
        REFUSED_CACHE.parent.mkdir(parents=True, exist_ok=True)
        REFUSED_CACHE.write_text(json.dumps(data, indent=1))
    except (OSError, ValueError):
        pass  # a cache, nothing more


def _apply_refused(probes: tuple[Probe, ...], refused: dict[str, str]) -> tuple[Probe, ...]:
    """``probes`` without those refused before; response-entry as its first variant not
    refused (remembered as ``response-entry#<n>``)."""
    out = []
    for p in probes:
        if p in RSP_ENTRY_VARIANTS:
            n = 0
            while n < len(RSP_ENTRY_VARIANTS) - 1 and f"response-entry#{n}" in refused:
                n += 1
            out.append(RSP_ENTRY_VARIANTS[n])
        elif p.name not in refused:
            out.append(p)
    return tuple(out)


def run_capture(
    out: Path,
    *,
    domain: int | None = None,
    vbd: int | None = None,
    seconds: float | None = None,
    raw_log: Path | None = None,
    bpftrace: str = "bpftrace",
    on_status: Callable[[str], None] | None = None,
    probes: tuple[Probe, ...] | None = None,
) -> CaptureStats:
    """Capture until SIGINT/SIGTERM or ``seconds``; returns what was captured."""
    stats = CaptureStats()
    if probes is None:
        probes, stats.missing = preflight(bpftrace)
    if domain is not None:
        check_domain(domain)
    stats.probes = sorted({p.name for p in probes})
    say = on_status or (lambda _msg: None)
    tsc = TscReader()

    stop: list[str] = []

    def _on_signal(signum: int, _frame: object) -> None:
        stop.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with tempfile.TemporaryDirectory(prefix="blktrace-xen-capture-") as tmp:
            script = Path(tmp) / "blkback.bt"
            with RingcapWriter(out) as writer:
                desc = (
                    f"agent=bpftrace blktrace-xen={__version__} kernel={platform.release()} "
                    f"machine={platform.machine()} probes={','.join(stats.probes)}"
                )
                iface = writer.add_agent(desc)
                sink = _Sink(writer, iface, _Filter(domain, vbd), stats, read_vbd_xenstore)
                raw = raw_log.open("w") if raw_log is not None else None
                try:
                    refused = _refused_before()
                    attempt = _apply_refused(probes, refused)
                    for name in sorted(refused):
                        stats.missing.append(
                            f"{name} refused earlier on this kernel: {refused[name]}"
                        )
                    while True:
                        script.write_text(program(attempt))
                        stats.probes = sorted({p.name for p in attempt})
                        try:
                            _run(
                                script=script,
                                bpftrace=bpftrace,
                                writer=writer,
                                iface=iface,
                                sink=sink,
                                stats=stats,
                                tsc=tsc,
                                stop=stop,
                                seconds=seconds,
                                raw=raw,
                                say=say,
                            )
                            break
                        except _AttachFailed as exc:
                            nxt = None if stop else _without_failed(attempt, str(exc))
                            if nxt is None:
                                raise CaptureError(str(exc)) from None
                            dropped = sorted({p.name for p in attempt} - {p.name for p in nxt})
                            for gone in set(attempt) - set(nxt):
                                key = gone.name
                                if gone in RSP_ENTRY_VARIANTS:  # replaced by its next variant
                                    key = f"response-entry#{RSP_ENTRY_VARIANTS.index(gone)}"
                                    dropped = [key]
                                refused[key] = str(exc)[-300:]
                            stats.missing.append(f"{', '.join(dropped)} dropped: {exc}")
                            _remember_refused(refused)
                            say(f"retrying without {', '.join(dropped)}: {exc}")
                            attempt = nxt
                finally:
                    if raw is not None:
                        raw.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return stats


class _AttachFailed(Exception):
    """bpftrace exited before attaching (a probe its verifier or this kernel refused)."""


# When bpftrace refuses a program without naming a line (the kernel's verifier),
# the heavier optional probes go first, so a kernel that rejects one still gets
# the exact core.
_DROP_ORDER: Final = (
    "disconnect-dump",
    "disconnect",
    "connect",
    "sysfs-bind",
    "frontend-changed",
    "backend-state",
    "counters",
    "probe",
    "remove",
    "notify",
    "consume",
)
_LINE_RE: Final = re.compile(r"\.bt:(\d+):")


def _without_failed(attempt: tuple[Probe, ...], error: str) -> tuple[Probe, ...] | None:
    """The next program to try after ``error``, None when only required probes are left."""
    m = _LINE_RE.search(error)
    culprit = probe_at_line(attempt, int(m.group(1))) if m else None
    if culprit is None:
        # the kernel refused one program: bpftrace names its attach point
        # several programs may share an attach point: the optional, later one goes first
        named = [p for p in attempt if any(a in error for a in p.attach_points)]
        optional = [p for p in named if not p.required]
        culprit = (optional or named)[-1] if named else None
    if culprit is None:
        culprit = next((p for n in _DROP_ORDER for p in attempt if p.name == n), None)
    if culprit is not None and culprit in RSP_ENTRY_VARIANTS[:-1]:
        nxt = RSP_ENTRY_VARIANTS[RSP_ENTRY_VARIANTS.index(culprit) + 1]
        return tuple(nxt if p is culprit else p for p in attempt)
    if culprit is None or culprit.required:
        return None
    return tuple(p for p in attempt if p is not culprit)


def _clock(writer: RingcapWriter, iface: int, tsc: TscReader) -> None:
    if tsc.available:
        t, real, before, after = tsc.pair()
        writer.write_agent(iface, after, _pack(Kind.CLOCK, t, real, before, after))


def _run(
    *,
    script: Path,
    bpftrace: str,
    writer: RingcapWriter,
    iface: int,
    sink: _Sink,
    stats: CaptureStats,
    tsc: TscReader,
    stop: list[str],
    seconds: float | None,
    raw: IO[str] | None,
    say: Callable[[str], None],
) -> None:
    env = dict(os.environ, BPFTRACE_PERF_RB_PAGES=_PERF_RB_PAGES)
    proc = subprocess.Popen(
        [bpftrace, "-B", "full", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us; we stop bpftrace so it drains first
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    carry = {"out": b"", "err": b""}
    errors: list[str] = []
    decoder = LineDecoder()
    attached_at: float | None = None
    attaching = "probes attached"
    started = time.monotonic()
    next_clock = 0.0
    signalled = False
    writer.write_agent(
        iface,
        time.monotonic_ns(),
        _pack_agent(AgentWhat.NOTE, f"counters at start: {backend_counters()}"),
    )
    while sel.get_map():
        now = time.monotonic()
        if now >= next_clock:
            _clock(writer, iface, tsc)
            writer.flush()
            if raw is not None:
                raw.flush()
            next_clock = now + _CLOCK_EVERY_S
        deadline = seconds is not None and attached_at is not None and now - attached_at >= seconds
        if attached_at is None and now - started > _ATTACH_TIMEOUT_S and not stop:
            stop.append(f"bpftrace did not attach within {_ATTACH_TIMEOUT_S:.0f} s")
        if (stop or deadline) and not signalled:
            stats.stop_reason = stop[0] if stop else f"--seconds {seconds:g}"
            signalled = True
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for key, _ in sel.select(timeout=0.2):
            data = os.read(key.fd, 1 << 16)
            name = key.data
            if not data:
                sel.unregister(key.fileobj)
                continue
            lines, carry[name] = _split_lines(carry[name], data)
            for line in lines:
                lost = _LOST_RE.search(line)
                if lost:
                    n = int(lost.group(1))
                    stats.lost += n
                    writer.write_agent(iface, time.monotonic_ns(), _pack(Kind.LOST, n))
                    continue
                if name == "err":
                    if line.strip():
                        errors.append(line.strip())
                    continue
                if raw is not None:
                    raw.write(line + "\n")
                if _ATTACH_RE.match(line):
                    attaching = line.strip()
                    continue
                if attached_at is None and line.startswith("B "):
                    # BEGIN fires once every probe is loaded and attached
                    attached_at = time.monotonic()
                    writer.write_agent(
                        iface,
                        time.monotonic_ns(),
                        _pack_agent(
                            AgentWhat.START,
                            f"{attaching}; missing: {' | '.join(stats.missing) or 'none'}",
                        ),
                    )
                    _clock(writer, iface, tsc)
                    say(f"capturing ({attaching}); Ctrl-C to stop")
                sink.write(decoder.feed(line))
    rc = proc.wait()
    _clock(writer, iface, tsc)
    stats.unparsed = decoder.unparsed
    if attached_at is None:
        tail = "; ".join(errors[-3:]) or f"bpftrace exited with status {rc}"
        writer.write_agent(
            iface, time.monotonic_ns(), _pack_agent(AgentWhat.NOTE, f"failed to attach: {tail}")
        )
        raise _AttachFailed(f"bpftrace could not attach the probes: {tail}")
    if not stats.stop_reason:
        stats.stop_reason = f"bpftrace exited with status {rc}"
    note = (
        f"reason={stats.stop_reason} records={stats.records} lost={stats.lost} "
        f"unparsed={stats.unparsed} filtered={stats.filtered}; counters at stop: "
        f"{backend_counters()}"
    )
    if decoder.samples:
        note += "; unparsed lines: " + " | ".join(decoder.samples)
    if errors:
        note += "; bpftrace said: " + " | ".join(errors[-5:])
    writer.write_agent(iface, time.monotonic_ns(), _pack_agent(AgentWhat.STOP, note))
    writer.flush()


def check_probes(
    bpftrace: str = "bpftrace", say: Callable[[str], None] | None = None
) -> dict[str, str]:
    """Load each probe alone (``capture --check``): probe name -> "ok" or bpftrace's error.

    What the kernel refuses is remembered for later captures (as a failed start would).
    """
    probes, missing = preflight(bpftrace)
    results: dict[str, str] = {m.split(" ", 1)[0]: m for m in missing}
    refused = _refused_before()
    candidates = [*RSP_ENTRY_VARIANTS, *probes[1:]]
    with tempfile.TemporaryDirectory(prefix="blktrace-xen-check-") as tmp:
        for p in candidates:
            name = p.name if p in probes else f"{p.name} variant {RSP_ENTRY_VARIANTS.index(p)}"
            script = Path(tmp) / "probe.bt"
            script.write_text(program((p,), check=True))
            try:
                # -v: a refused program comes with the kernel verifier's own words
                res = subprocess.run(
                    [bpftrace, "-v", str(script)],
                    capture_output=True,
                    text=True,
                    timeout=_ATTACH_TIMEOUT_S,
                    check=False,
                )
                ok = any(ln.startswith("B ") for ln in res.stdout.splitlines())
                tail = [ln for ln in (res.stderr + res.stdout).strip().splitlines() if ln.strip()]
                why = (
                    "ok"
                    if ok
                    else (" | ".join(tail[-6:]) or f"bpftrace exited with status {res.returncode}")
                )
            except subprocess.TimeoutExpired:
                why = f"no attach within {_ATTACH_TIMEOUT_S:.0f} s"
            results[name] = why
            key = (
                f"response-entry#{RSP_ENTRY_VARIANTS.index(p)}"
                if p in RSP_ENTRY_VARIANTS
                else p.name
            )
            if why == "ok":
                refused.pop(key, None)
            else:
                refused[key] = why[-300:]
            if say:
                say(f"{name}: {why}")
    _remember_refused(refused)
    return results


__all__ = [
    "CaptureStats",
    "available_functions",
    "backend_counters",
    "check_domain",
    "check_probes",
    "choose_probes",
    "preflight",
    "run_capture",
]

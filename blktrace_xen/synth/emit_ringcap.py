"""A simulation as a pcapng ring capture: polled ring snapshots plus xenstore state lines.

The capture is what a dom0 poller of the shared ring would record: one interface per
ring (``vbd/<domid>/<vdev>/q<queue>``), one snapshot (the raw ring area, laid out by
:class:`blktrace_xen.encode.blkif.RingPage`) every ``poll_ns`` while the ring changes,
plus a snapshot taken *just before* an entry nobody has seen yet is overwritten (a
response over an unseen request, a request over an unseen response, a hostile slot
rewrite) so that decoding the capture recovers every request and response. Each
snapshot carries the TSC on the same clock as the xentrace dump.

The page mirror is rebuilt from the model's actions: a request is written whole, a
response writes only id, operation and status over the request's bytes (as blkback
does since XSA-216). ``req_event`` follows the backend's ``req_cons + 1`` and
``rsp_event`` the frontend's ``rsp_cons + 1`` (RING_FINAL_CHECK_FOR_*).

A ring is re-initialised on restore (a fresh page on the same interface: the decoder
sees its producers go back) and on migration the target's fresh ring is captured on the
target host (a second capture file). Responses a backend writes into a page that is no
longer the one its host's poller maps (an old page after a restore) are not captured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from blktrace_xen.encode.blkif import RingPage
from blktrace_xen.encode.ringcap import RingcapWriter
from blktrace_xen.model.events import (
    FrontMutateSlot,
    FrontSetReqProd,
    RequestConsumed,
    RequestPushed,
    ResponseConsumed,
    ResponsePushed,
    Resume,
    RingKey,
    RingMapped,
    ShutdownDone,
    StateChanged,
    TargetStarted,
)
from blktrace_xen.synth.sim import SimResult

_M: Final = 0xFFFFFFFF
_HALF: Final = 1 << 31
ABI: Final = "x86_64-abi"
GREF_BASE: Final = 8  # grant refs 0..7 are reserved (GNTTAB_NR_RESERVED_ENTRIES)


def _before(x: int, upto: int) -> bool:
    """Ring index ``x`` lies before ``upto`` (wrap-safe)."""
    d = (upto - x) & _M
    return 0 < d < _HALF


@dataclass(slots=True)
class _Gen:
    """One ring page (a ring generation) as its host's poller sees it."""

    key: RingKey
    host: str
    page: RingPage
    nr_ents: int
    slots: dict[int, dict[str, int]] = field(default_factory=dict)
    snap_req: int = 0
    snap_rsp: int = 0
    dirty: bool = True
    snapshots: int = 0


@dataclass(slots=True)
class RingcapStats:
    snapshots: int = 0
    xenstore: int = 0
    files: list[Path] = field(default_factory=list)


class _Capture:
    def __init__(self, out: dict[str, Path], *, order: int, poll_ns: int, tsc: Any) -> None:
        self.writers = {host: RingcapWriter(path) for host, path in out.items()}
        self.xs = {host: w.add_xenstore() for host, w in self.writers.items()}
        self.ifaces: dict[tuple[str, RingKey], int] = {}
        self.order = order
        self.poll_ns = poll_ns
        self.tsc = tsc
        self.current: dict[tuple[str, RingKey], _Gen] = {}
        self.front_gen: dict[RingKey, _Gen] = {}
        self.back_gen: dict[tuple[RingKey, int], _Gen] = {}
        self.next_poll = poll_ns
        self.stats = RingcapStats(files=list(out.values()))

    # ------------------------------------------------------------ pages

    def new_gen(self, key: RingKey, host: str, t: int) -> _Gen:
        cur = self.current.get((host, key))
        if cur is not None and cur.dirty:
            self.snapshot(cur, t)
        page = RingPage(ABI, self.order)
        gen = _Gen(key, host, page, page.geometry.nr_ents)
        if (host, key) not in self.ifaces:
            w = self.writers[host]
            self.ifaces[(host, key)] = w.add_ring(
                key[0], key[1], key[2], abi=ABI, ring_page_order=self.order
            )
        self.current[(host, key)] = gen
        self.front_gen[key] = gen
        if cur is not None:
            # The fresh page as SHARED_RING_INIT left it: the decoder sees the producers
            # restart from 0 and reads every request published on the new page.
            self.snapshot(gen, t)
        return gen

    def snapshot(self, gen: _Gen, t: int) -> None:
        if self.current.get((gen.host, gen.key)) is not gen:
            return
        w = self.writers[gen.host]
        w.write_snapshot(self.ifaces[(gen.host, gen.key)], t, gen.page.to_bytes(), tsc=self.tsc(t))
        gen.snap_req = gen.page.req_prod
        gen.snap_rsp = gen.page.rsp_prod
        gen.dirty = False
        gen.snapshots += 1
        self.stats.snapshots += 1

    def poll(self, t: int) -> None:
        if t < self.next_poll:
            return
        at = self.next_poll
        for gen in self.current.values():
            if gen.dirty:
                self.snapshot(gen, at)
        # the next poll after t (idle periods produce no snapshots)
        self.next_poll = at + ((t - at) // self.poll_ns + 1) * self.poll_ns

    def write_request(self, gen: _Gen, t: int, idx: int, fields: dict[str, int]) -> None:
        n = gen.nr_ents
        old = (idx - n) & _M
        page = gen.page
        if _before(old, page.rsp_prod) and not _before(old, gen.snap_rsp):
            self.snapshot(gen, t)  # response ``old`` would vanish unseen
        elif _before(old, page.req_prod) and not _before(old, gen.snap_req):
            self.snapshot(gen, t)  # an unseen request would vanish (ring overrun)
        gen.slots[idx & (n - 1)] = fields
        self._put(gen, idx, fields)
        gen.dirty = True

    def _put(self, gen: _Gen, idx: int, f: dict[str, int]) -> None:
        slot = idx & (gen.nr_ents - 1)
        nseg = f["nr_segments"]
        left = f["nr_sectors"]
        segs = []
        for s in range(min(nseg, 11)):
            k = max(1, min(8, left))
            left -= k
            segs.append((GREF_BASE + slot * 11 + s, 0, k - 1))
        op = f["operation"]
        gen.page.put_request(
            idx,
            operation=op,
            id=f["id"],
            sector_number=f["sector_number"],
            nr_segments=nseg if op in (0, 1, 2, 3) else None,
            segments=segs if op in (0, 1, 2, 3) else (),
        )

    def write_response(self, gen: _Gen, t: int, a: ResponsePushed) -> None:
        if not _before(a.idx, gen.snap_req) and _before(a.idx, gen.page.req_prod):
            self.snapshot(gen, t)  # request a.idx would only be seen through its response
        gen.page.put_response(a.idx, id=a.id, operation=a.operation, status=a.status)
        gen.page.rsp_prod = (a.idx + 1) & _M
        gen.dirty = True

    def xenstore(self, host: str, t: int, path: str, value: str) -> None:
        self.writers[host].write_xenstore(t, path, value, tsc=self.tsc(t), iface=self.xs[host])
        self.stats.xenstore += 1

    def close(self, t: int) -> None:
        for gen in list(self.current.values()):
            if gen.dirty:
                self.snapshot(gen, t)
        for w in self.writers.values():
            w.close()


def _front_path(key: RingKey) -> str:
    return f"/local/domain/{key[0]}/device/vbd/{key[1]}"


def _back_path(key: RingKey, backend_domid: int) -> str:
    return f"/local/domain/{backend_domid}/backend/vbd/{key[0]}/{key[1]}"


def _handshake(cap: _Capture, host: str, keys: list[RingKey], t: int, persistent: bool) -> None:
    """The xenbus handshake of each vbd (blkif.h "Feature and Parameter Negotiation")."""
    vbds = sorted({(k[0], k[1]) for k in keys})
    for domid, vdev in vbds:
        queues = sorted(k[2] for k in keys if (k[0], k[1]) == (domid, vdev))
        key = (domid, vdev, 0)
        back, front = _back_path(key, 0), _front_path(key)
        pages = 1 << cap.order
        cap.xenstore(host, t, f"{back}/max-ring-page-order", "4")
        cap.xenstore(host, t, f"{back}/multi-queue-max-queues", "4")
        cap.xenstore(host, t, f"{back}/feature-persistent", str(int(persistent)))
        cap.xenstore(host, t, f"{back}/state", "2")
        if cap.order:
            cap.xenstore(host, t, f"{front}/ring-page-order", str(cap.order))
        multi = len(queues) > 1
        if multi:
            cap.xenstore(host, t, f"{front}/multi-queue-num-queues", str(len(queues)))
        for q in queues:
            prefix = f"{front}/queue-{q}" if multi else front
            refs = (
                [("ring-ref", 1000 + q)]
                if pages == 1
                else [(f"ring-ref{i}", 1000 + q * pages + i) for i in range(pages)]
            )
            for name, ref in refs:
                cap.xenstore(host, t, f"{prefix}/{name}", str(ref))
            cap.xenstore(host, t, f"{prefix}/event-channel", str(20 + q))
        cap.xenstore(host, t, f"{front}/protocol", ABI)
        cap.xenstore(host, t, f"{front}/feature-persistent", str(int(persistent)))
        cap.xenstore(host, t, f"{front}/state", "3")
        cap.xenstore(host, t, f"{back}/state", "4")
        cap.xenstore(host, t, f"{front}/state", "4")


def write_ringcap(
    sim: SimResult,
    out: Path,
    *,
    ring_page_order: int = 0,
    poll_ns: int = 1_000_000,
    tsc: Any,
    target_out: Path | None = None,
    persistent_grants: bool = False,
) -> RingcapStats:
    """Write the capture of ``sim`` to ``out`` (and the migration target's to ``target_out``).

    ``tsc(ns)`` gives the TSC of a simulation time (the xentrace emitter's mapping).
    """
    hosts = {"source": out}
    if target_out is not None:
        hosts["target"] = target_out
    cap = _Capture(hosts, order=ring_page_order, poll_ns=poll_ns, tsc=tsc)
    keys = list(sim.config.rings)
    host = "source"
    try:
        _handshake(cap, host, keys, 0, persistent_grants)
        for key in keys:
            cap.new_gen(key, host, 0)
        pending_new: set[RingKey] = set()
        for step in sim.steps:
            t = step.t_ns
            cap.poll(t)
            ev = step.event
            if isinstance(ev, Resume):
                pending_new.add(ev.ring)
            elif isinstance(ev, FrontSetReqProd):
                gen = cap.front_gen[ev.ring]
                if gen.dirty:
                    cap.snapshot(gen, t)
                gen.page.req_prod = ev.req_prod
                gen.dirty = True
                cap.snapshot(gen, t)
            elif isinstance(ev, FrontMutateSlot):
                gen = cap.front_gen[ev.ring]
                if gen.dirty:
                    cap.snapshot(gen, t)
                slot = ev.idx & (gen.nr_ents - 1)
                fields = dict(gen.slots.get(slot, {}))
                for k in ("operation", "sector_number", "nr_sectors", "nr_segments", "id"):
                    v = getattr(ev, k)
                    if v is not None:
                        fields[k] = v
                if fields:
                    gen.slots[slot] = fields
                    cap._put(gen, ev.idx, fields)
                    gen.dirty = True
                    cap.snapshot(gen, t)
            for a in step.actions:
                # The target's ring is mapped before TargetStarted is reported: switch
                # hosts before the step's RingMapped.
                if isinstance(a, TargetStarted):
                    if target_out is not None and host != "target":
                        host = "target"
                        _handshake(cap, host, [a.ring], t, persistent_grants)
                    pending_new.add(a.ring)
            for a in step.actions:
                if isinstance(a, RingMapped):
                    if a.ring in pending_new:
                        pending_new.discard(a.ring)
                        cap.new_gen(a.ring, host, t)
                    cap.back_gen[(a.ring, a.backend)] = cap.front_gen[a.ring]
                elif isinstance(a, RequestPushed):
                    if a.ring in pending_new:  # re-issue on the fresh ring of a resume
                        pending_new.discard(a.ring)
                        cap.new_gen(a.ring, host, t)
                    gen = cap.front_gen[a.ring]
                    cap.write_request(
                        gen,
                        t,
                        a.idx,
                        {
                            "operation": a.operation,
                            "id": a.id,
                            "sector_number": a.sector_number,
                            "nr_sectors": a.nr_sectors,
                            "nr_segments": a.nr_segments,
                        },
                    )
                    gen.page.req_prod = (a.idx + 1) & 0xFFFFFFFF
                elif isinstance(a, ResponsePushed):
                    g = cap.back_gen.get((a.ring, a.backend))
                    if g is not None:
                        cap.write_response(g, t, a)
                elif isinstance(a, RequestConsumed):
                    g = cap.back_gen.get((a.ring, a.backend))
                    if g is not None:
                        g.page.req_event = (a.idx + 2) & _M
                        g.dirty = True
                elif isinstance(a, ResponseConsumed):
                    gen = cap.front_gen[a.ring]
                    gen.page.rsp_event = (a.idx + 2) & _M
                    gen.dirty = True
                elif isinstance(a, StateChanged):
                    path = (
                        _front_path(a.ring) if a.side == "front" else _back_path(a.ring, 0)
                    ) + "/state"
                    cap.xenstore(host, t, path, str(a.xenbus))
                elif isinstance(a, ShutdownDone):
                    cap.xenstore("source", t, _back_path(a.ring, 0) + "/shutdown-done", "1")
        cap.close(sim.end_ns)
    finally:
        for w in cap.writers.values():
            w.close()
    return cap.stats


__all__ = ["RingcapStats", "write_ringcap"]

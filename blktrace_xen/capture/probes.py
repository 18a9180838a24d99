"""The bpftrace program of ``blktrace-xen capture``: which xen-blkback functions it probes and why.

Every probe is declared once here with the kernel function it attaches to, what
it records and what is lost when that function cannot be traced on a kernel
(inlined away, renamed). :func:`program` writes the bpftrace source from the
probes that are available; :mod:`blktrace_xen.capture.lines` reads its output.

Why the request bytes are read at ``make_response`` entry (checked on the real
Xen 4.17 lab, docs/capture.md): the frontend may reuse a slot only after it has
consumed the response written there, and the backend writes response ``k`` into
slot ``k``, so until ``make_response`` writes index ``k`` the slot still holds
*request* ``k`` exactly as the frontend wrote it. Each call reads slots ``k``
(its private producer at entry) and ``k + 1``. Two completions on two CPUs may
read the same ``k`` before either takes the ring lock; then one writes ``k``
and the other ``k + 1``, and the reads of both slots by both calls are taken
before either response lands there, except a racer's read of slot ``k`` taken
after the winner's response was written, which reads as that response and is
set aside (streams/from_agent.py). A response's index is ``k`` when no other
call read the same ``k`` at the same time, and unknown when one did: a
``kretfunc`` could tell, but bpftrace 0.17 cannot load fexit programs on
xen-blkback (Linux 6.1, checked in the lab).

Layouts the program relies on (Linux ``drivers/block/xen-blkback/common.h``,
read through the module's BTF, so offsets are the kernel's own): the ring's
``blk_rings.common`` (``rsp_prod_pvt``, ``req_cons``, ``nr_ents``, ``sring``),
``blkif`` (``domid``, ``vbd.handle`` = the vdev: ``blkif->handle`` stays 0 on 6.1,
seen in the lab; ``blk_protocol``, ``rings``,
``nr_rings``, ``nr_ring_pages``), the per-ring counters ``st_*_req``; the shared
ring's 64-byte header and its entries (112 bytes; 108 for ``x86_32-abi``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MODULE: Final = "xen_blkback"
# Words read per slot: 112 bytes covers an x86_64 entry and an x86_32 one (108)
# plus 4 bytes of the next entry, which the decoder drops.
SLOT_WORDS: Final = 14
# Slots dumped per ring at disconnect (requests published but never answered);
# a larger backlog is reported as cut, never silently dropped.
DUMP_SLOTS: Final = 64
# Rings read per device (multi-queue) at connect and disconnect.
MAX_QUEUES: Final = 4
NOT_FOUND: Final = 0xFFFFFFFF

# The fields every ring line starts with after "<kind> <ns> <cpu> <tid>":
# ring address, domid, vdev, queue, protocol, nr_ents.
_RING = (
    "(uint64)$r, (uint64)$r->blkif->domid, (uint64)0xffffffff, "
    "((uint64)$r - (uint64)$r->blkif->rings) / sizeof(struct xen_blkif_ring), "
    "(uint64)$r->blkif->blk_protocol, (uint64)$r->blk_rings.common.nr_ents"
)
_RING_FMT = "%llx %llu %llu %llu %llu %llu"
# The vdev is blkif->vbd.handle, a blkif_vdev_t that bpftrace 0.17 cannot cast (a vmlinux
# typedef seen through the module's split BTF; blkif->handle stays 0 on 6.1): ring lines
# carry all ones there, and the rare RING lines name the backend device, whose node name
# ends in the vdev; the decoder fills it in by ring (seen in the lab).
_NODENAME = "str($r->blkif->be->dev->nodename)"
_HEAD_FMT = "%llu %u %u"
_HEAD = "nsecs, cpu, tid"
_SLOT_FMT = " ".join(["%llx"] * SLOT_WORDS)
# Replaced by program(): the sysfs flags only exist when their probes do.
_FLAGS = "@@FLAGS@@"
_ES = "$es = $r->blkif->blk_protocol == 2 ? (uint64)108 : (uint64)112;"
_GEOM = "$c = (uint64)$r->blk_rings.common.sring; $n = (uint64)$r->blk_rings.common.nr_ents; " + _ES


def _slot(ptr: str) -> str:
    return ", ".join(f"*(uint64 *)({ptr} + {8 * i})" for i in range(SLOT_WORDS))


def _indices() -> str:
    return (
        "(uint64)$r->blk_rings.common.rsp_prod_pvt, (uint64)$r->blk_rings.common.req_cons, "
        "(uint64)$r->blk_rings.common.sring->req_prod, (uint64)$r->blk_rings.common.sring->rsp_prod"
    )


def _counters() -> str:
    return "$r->st_rd_req, $r->st_wr_req, $r->st_f_req, $r->st_ds_req"


def _for_rings(blkif: str, body: str, queues: int = MAX_QUEUES) -> str:
    return (
        f"$b = {blkif}; $i = (uint64)0;\n"
        f"  unroll({queues}) {{\n"
        "    if ($i < (uint64)$b->nr_rings) {\n"
        "      $r = (struct xen_blkif_ring *)((uint64)$b->rings + "
        "$i * sizeof(struct xen_blkif_ring));\n"
        f"      {body}\n"
        "    }\n"
        "    $i = $i + 1;\n"
        "  }"
    )


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe of the program: where it attaches and what it gives."""

    name: str
    function: str  # the xen_blkback function (or kernel function for kprobes)
    module: str | None  # None: a vmlinux function
    required: bool
    records: str  # what it records (docs/capture.md)
    lost_without: str  # what a capture lacks when the function cannot be traced
    text: str
    maps: tuple[str, ...] = ()  # the maps its text defines (END clears them)

    @property
    def attach_points(self) -> tuple[str, ...]:
        """The probe points of its text, as bpftrace names them in its errors."""
        heads = ("kfunc:", "kretfunc:", "kprobe:", "kretprobe:")
        return tuple(
            ln.split("{")[0].strip() for ln in self.text.splitlines() if ln.startswith(heads)
        )


_RSP_ENTRY = Probe(
    name="response-entry",
    function="make_response",
    module=MODULE,
    required=True,
    records="every response (id, op, status) and the request bytes of slots k and k+1",
    lost_without="everything: no request or response can be recorded",
    text=f"""kfunc:{MODULE}:make_response
{{
  $r = args->ring; {_GEOM}
  $k = (uint64)$r->blk_rings.common.rsp_prod_pvt;
  $p = $c + 64 + ($k & ($n - 1)) * $es;
  $t = nsecs;
  printf("E {_HEAD_FMT} {_RING_FMT} %llu %llu %llu %llu %lld %llu %llu {_SLOT_FMT}\\n",
    $t, cpu, tid, {_RING}, {_indices()}, (int64)args->st, (uint64)args->op, args->id,
    {_slot("$p")});
  $q = $c + 64 + (($k + 1) & ($n - 1)) * $es;
  printf("F %llu %u {_SLOT_FMT}\\n", $t, tid, {_slot("$q")});
}}
""",
)

# The same probe without the second slot read: for a kernel whose verifier refuses the
# larger program (a request that loses a two-deep completion race then has no bytes).
RSP_ENTRY_LEAN: Final = Probe(
    name="response-entry",
    function="make_response",
    module=MODULE,
    required=True,
    records="every response (id, op, status) and the request bytes of slot k",
    lost_without=_RSP_ENTRY.lost_without,
    text=_RSP_ENTRY.text[: _RSP_ENTRY.text.index("  $q = ")] + "}\n",
)


def _as_kprobe(p: Probe, name_suffix: str) -> Probe:
    """``p`` as a kprobe: raw arguments cast to the module's types (a kernel refusing fentry)."""
    text = (
        p.text.replace(f"kfunc:{MODULE}:make_response", "kprobe:make_response")
        .replace("args->ring", "((struct xen_blkif_ring *)arg0)")
        .replace("(int64)args->st", "(int64)(int32)arg3")
        .replace("(uint64)args->op", "(uint64)(arg2 & 0xffff)")
        .replace("args->id", "(uint64)arg1")
    )
    return Probe(
        name=p.name,
        function=p.function,
        module=p.module,
        required=True,
        records=p.records + f" ({name_suffix})",
        lost_without=p.lost_without,
        text=text,
    )


RSP_ENTRY_KPROBE: Final = _as_kprobe(_RSP_ENTRY, "kprobe")
RSP_ENTRY_KPROBE_LEAN: Final = _as_kprobe(RSP_ENTRY_LEAN, "kprobe")
# What response-entry falls back to, in turn, when the kernel refuses a program: the
# kprobe form first (the x86-64 argument registers cast to the module's types), which
# loads on the lab's Linux 6.1 / bpftrace 0.17, where the fentry (kfunc) form, reading
# the arguments by their BTF names, is refused by the verifier after ~120 instructions.
RSP_ENTRY_VARIANTS: Final = (RSP_ENTRY_KPROBE, RSP_ENTRY_KPROBE_LEAN, _RSP_ENTRY, RSP_ENTRY_LEAN)

_CONSUME = Probe(
    name="consume",
    function="xen_blkbk_map",
    module=MODULE,
    required=False,
    records="when each read/write/flush request was consumed (req_cons) and its grants mapped",
    lost_without="consume times (consumed_ns null)",
    text=f"""kprobe:xen_blkbk_map
{{
  $r = (struct xen_blkif_ring *)arg0;
  printf("M {_HEAD_FMT} {_RING_FMT} %llu %llu %llu %llu %lld\\n",
    {_HEAD}, {_RING}, {_indices()}, (int64)arg2);
}}
""",
)

# blkback's own counters the first time the agent sees a ring kicked, with the
# indices they match (every request below req_cons is counted).
_COUNTERS = Probe(
    name="counters",
    function="xen_blkif_be_int",
    module=MODULE,
    required=False,
    records="blkback's request counters of each ring when the agent first sees it kicked",
    lost_without="the counters that prove no request before or during the capture was missed",
    text=f"""kprobe:xen_blkif_be_int
/@seen[(uint64)arg1] == 0/
{{
  $r = (struct xen_blkif_ring *)arg1;
  @seen[(uint64)$r] = 1;
  printf("R {_HEAD_FMT} {_RING_FMT} %llu %llu %llu %llu %llu %llu %llx %llu %llu %llu %llu %s\\n",
    {_HEAD}, {_RING}, {_indices()}, (uint64)$r->blkif->nr_ring_pages, (uint64)3,
    (uint64)$r->blk_rings.common.sring, {_counters()}, {_NODENAME});
}}
""",
    maps=("@seen",),
)

_NOTIFY = Probe(
    name="notify",
    function="xen_blkif_be_int",
    module=MODULE,
    required=False,
    records="each event-channel kick from the frontend with the ring's indices",
    lost_without="the earliest sight of a request before it is consumed",
    text=f"""kprobe:xen_blkif_be_int
{{
  $r = (struct xen_blkif_ring *)arg1;
  printf("I {_HEAD_FMT} {_RING_FMT} %llu %llu %llu %llu\\n", {_HEAD}, {_RING}, {_indices()});
}}
""",
)

# The xenbus state of either end, as the backend side sees it. kprobes on the xenbus
# core (vmlinux) with raw arguments: bpftrace 0.17 cannot cast the enum xenbus_state
# argument of xen-blkback's own frontend_changed (a vmlinux type seen through the
# module's split BTF). The core reads the frontend's state for every backend driver;
# the agent keeps the vbd paths.
_FRONTEND = Probe(
    name="frontend-changed",
    function="xenbus_read_driver_state",
    module=None,
    required=False,
    records="every frontend xenbus state the backend reads (what blkback then reacts to)",
    lost_without="frontend state changes",
    maps=("@xs_path", "@xs_on"),
    text="""kprobe:xenbus_read_driver_state { @xs_path[tid] = str(arg0); @xs_on[tid] = 1; }
kretprobe:xenbus_read_driver_state
/@xs_on[tid] == 1/
{
  printf("V %llu %u %u %s %lld\\n", nsecs, cpu, tid, @xs_path[tid], (int64)retval);
  delete(@xs_path[tid]); delete(@xs_on[tid]);
}
""",
)

_BACKEND = Probe(
    name="backend-state",
    function="xenbus_switch_state",
    module=None,
    required=False,
    records="every xenbus state the backend switches to",
    lost_without="backend state changes",
    text="""kprobe:xenbus_switch_state
{
  printf("W %llu %u %u %s %lld\\n", nsecs, cpu, tid,
    str(((struct xenbus_device *)arg0)->nodename), (int64)arg1);
}
""",
)

# connect_ring maps every ring, then frontend_changed calls xen_update_blkif_status,
# which writes the backend's Connected state: at its entry the rings are live. (No
# kretfunc anywhere: bpftrace 0.17 on Linux 6.1 cannot load fexit programs on
# xen-blkback's functions, checked in the lab; return values come from kretprobes.)
_R_LINE = (
    f'printf("R {_HEAD_FMT} {_RING_FMT} %llu %llu %llu %llu %llu %llu %llx %llu %llu %llu '
    '%llu %s\\n",\n'
    f"        {_HEAD}, {_RING}, {_indices()}, (uint64)$b->nr_ring_pages, (uint64)1,\n"
    f"        (uint64)$r->blk_rings.common.sring, {_counters()}, {_NODENAME});"
)

_CONNECT = Probe(
    name="connect",
    function="xen_update_blkif_status",
    module=MODULE,
    required=False,
    records="each ring as mapped at connect: indices, order, protocol, counters",
    lost_without="ring connects (ring_map) and counters of new rings",
    text=f"""kprobe:xen_update_blkif_status
{{
  {_for_rings("((struct xen_blkif *)arg0)", _R_LINE)}
}}
""",
)


def _device_probe(name: str, function: str, event: int, records: str, lost: str) -> Probe:
    """A backend device's probe or removal (XENBUS record ``event``), with its node name."""
    return Probe(
        name=name,
        function=function,
        module=MODULE,
        required=False,
        records=records,
        lost_without=lost,
        text=f"""kprobe:{function}
{{
  $d = (struct xenbus_device *)arg0;
  printf("P {_HEAD_FMT} %lld %s %llu %llu %llu %llu\\n", {_HEAD}, (int64)$d->otherend_id,
    str($d->nodename), (uint64){event}, (uint64)255, (uint64)255, {_FLAGS});
}}
""",
    )


_PROBE = _device_probe(
    "probe",
    "xen_blkbk_probe",
    2,
    "a backend device created (and whether by a sysfs bind)",
    "backend creation and binds",
)
_REMOVE = _device_probe(
    "remove",
    "xen_blkbk_remove",
    3,
    "a backend device removed (and whether by a sysfs unbind)",
    "backend removal and unbinds",
)

# The sysfs bind/unbind handlers run the driver's probe/remove synchronously in
# the writing task: a flag per task tells an unbind from a device going away.
_SYSFS = Probe(
    name="sysfs-bind",
    function="unbind_store",
    module=None,
    required=False,
    records="whether a probe/remove ran under a sysfs bind/unbind",
    lost_without="the distinction between an unbind and a removal (both recorded as removal)",
    maps=("@unbinding", "@binding"),
    text="""kprobe:unbind_store { @unbinding[tid] = 1; }
kretprobe:unbind_store { delete(@unbinding[tid]); }
kprobe:bind_store { @binding[tid] = 1; }
kretprobe:bind_store { delete(@binding[tid]); }
""",
)

_D_LINE = (
    f'printf("D %llu %u %u {_RING_FMT} %llu %llu %llu %llu %llx\\n", $t, cpu, tid, {_RING},\n'
    f"        {_indices()}, (uint64)$r->blk_rings.common.sring);"
)
_S_LINES = (
    f"{_GEOM}\n"
    "      if ($c != 0) {\n"
    "        $j = (uint64)$r->blk_rings.common.rsp_prod_pvt;\n"
    "        $e = (uint64)$r->blk_rings.common.sring->req_prod;\n"
    "        $m = (uint64)0;\n"
    f"        while ($j != $e && $m < {DUMP_SLOTS}) {{\n"
    "          $p = $c + 64 + ($j & ($n - 1)) * $es;\n"
    f'          printf("S %llu %u %llx %llu {_SLOT_FMT}\\n", nsecs, tid, (uint64)$r, $j,\n'
    f"            {_slot('$p')});\n"
    "          $j = ($j + 1) & 0xffffffff; $m = $m + 1;\n"
    "        }\n"
    "      }"
)

_DISCONNECT = Probe(
    name="disconnect",
    function="xen_blkif_disconnect",
    module=MODULE,
    required=False,
    records="disconnects with each ring's indices, and what xen_blkif_disconnect returned",
    lost_without="disconnects",
    maps=("@disc_b", "@disc_d", "@disc_v"),
    text=f"""kprobe:xen_blkif_disconnect
{{
  $t = nsecs;
  $x = (struct xen_blkif *)arg0;
  @disc_b[tid] = (uint64)$x; @disc_d[tid] = (uint64)$x->domid;
  @disc_v[tid] = str($x->be->dev->nodename);
  {_for_rings("$x", _D_LINE, queues=MAX_QUEUES)}
}}
kretprobe:xen_blkif_disconnect
/@disc_b[tid] != 0/
{{
  printf("Q {_HEAD_FMT} %llx %llu %s %lld\\n", {_HEAD}, @disc_b[tid], @disc_d[tid],
    @disc_v[tid], (int64)retval);
  delete(@disc_b[tid]); delete(@disc_d[tid]); delete(@disc_v[tid]);
}}
""",
)

# A second program on xen_blkif_disconnect (after the first, whose D lines the slots
# belong to): the bytes of every request published and not answered, before the ring
# is unmapped.
_DISCONNECT_DUMP = Probe(
    name="disconnect-dump",
    function="xen_blkif_disconnect",
    module=MODULE,
    required=False,
    records="the bytes of every request published but not answered at a disconnect",
    lost_without="bytes of the requests never answered",
    text=f"""kprobe:xen_blkif_disconnect
{{
  {_for_rings("((struct xen_blkif *)arg0)", _S_LINES, queues=2)}
}}
""",
)

PROBES: Final = (
    RSP_ENTRY_KPROBE,
    _COUNTERS,
    _CONSUME,
    _NOTIFY,
    _FRONTEND,
    _BACKEND,
    _CONNECT,
    _PROBE,
    _REMOVE,
    _SYSFS,
    _DISCONNECT,
    _DISCONNECT_DUMP,
)


def traceable(available: set[str], probe: Probe) -> bool:
    """Whether ``probe``'s function is among ``available`` (lines of available_filter_functions)."""
    want = f"{probe.function} [{probe.module}]" if probe.module else probe.function
    return want in available


def probe_at_line(probes: tuple[Probe, ...], line: int) -> Probe | None:
    """The probe whose text holds ``line`` (1-based) of ``program(probes)``: bpftrace errors
    name a line, so a program refused there can go on without that probe."""
    at = _HEADER.count("\n")
    for p in PROBES:
        if p not in probes:
            continue
        n = p.text.count("\n")
        if at < line <= at + n:
            return p
        at += n
    return None


_HEADER: Final = (
    "// generated by blktrace-xen capture (blktrace_xen/capture/probes.py)\n"
    'BEGIN { printf("B %llu\\n", nsecs); }\n'
)


def program(probes: tuple[Probe, ...], *, check: bool = False) -> str:
    """The bpftrace source for ``probes`` (in :data:`PROBES` order).

    ``check``: exit as soon as everything is loaded and attached (``capture --check``).
    """
    head = _HEADER.replace("nsecs); }", "nsecs); exit(); }") if check else _HEADER
    # END clears the maps so bpftrace's exit dump prints nothing
    maps = [m for p in PROBES if p in probes for m in p.maps]
    end = "END { " + "".join(f"clear({m}); " for m in maps) + 'printf("Z %llu\\n", nsecs); }\n'
    flags = "(uint64)(@unbinding[tid] + 2 * @binding[tid])" if _SYSFS in probes else "(uint64)0"
    body = "".join(p.text for p in (*RSP_ENTRY_VARIANTS, *PROBES[1:]) if p in probes)
    body = body.replace(_FLAGS, flags)
    return head + body + end


__all__ = [
    "DUMP_SLOTS",
    "MODULE",
    "NOT_FOUND",
    "PROBES",
    "RSP_ENTRY_LEAN",
    "SLOT_WORDS",
    "Probe",
    "probe_at_line",
    "program",
]


_BEGIN: Final = "<!-- probes: generated by python -m blktrace_xen.capture.probes --write -->"
_END: Final = "<!-- probes: end -->"


def probes_table() -> str:
    """The Markdown table of :data:`PROBES` (docs/capture.md)."""
    rows = [
        "| probe | attaches to | records | without it |",
        "|---|---|---|---|",
    ]
    for p in PROBES:
        where = ", ".join(f"`{a}`" for a in p.attach_points)
        need = " (required)" if p.required else ""
        rows.append(f"| {p.name}{need} | {where} | {p.records} | {p.lost_without} |")
    return "\n".join(rows)


def write_docs(path: str) -> bool:
    """Rewrite the generated table in ``path``; True if it changed."""
    from pathlib import Path

    doc = Path(path)
    text = doc.read_text()
    head, _, rest = text.partition(_BEGIN)
    _, _, tail = rest.partition(_END)
    new = f"{head}{_BEGIN}\n{probes_table()}\n{_END}{tail}"
    if new != text:
        doc.write_text(new)
    return new != text


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:
        write_docs(sys.argv[2] if len(sys.argv) > 2 else "docs/capture.md")
    else:
        print(probes_table())

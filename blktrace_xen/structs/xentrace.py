"""xentrace on-disk format: construct declarations and TRC_* constants (pure data).

Provenance: ``xen/include/public/trace.h`` (``struct t_rec``, TRC_* ids) and
``tools/xentrace/xentrace.c`` (``struct cpu_change_record``, windows) of Xen
4.17, as summarised in docs/xen-abi.md §5. Debian 12 libxen-dev ships the same
``trace.h``; tests/oracles/xentrace_writer.c is compiled against it.

A dump has no file header: it is a sequence of *windows*, each a 12-byte
cpu-change record (itself a ``t_rec`` with 2 extra words and no TSC) followed
by ``window_size`` bytes of that pCPU's ``t_rec`` records. Everything is
host-endian; x86 hosts make it little-endian.
"""

from __future__ import annotations

from typing import Final

from construct import (
    Array,
    BitsInteger,
    BitStruct,
    ByteSwapped,
    Const,
    Flag,
    If,
    Int16ul,
    Int32sl,
    Int32ul,
    Int64ul,
    Struct,
    this,
)

# --- event id layout (trace.h) -------------------------------------------------
TRC_HD_CYCLE_FLAG: Final = 1 << 31
TRC_HD_EXTRA_SHIFT: Final = 28
TRC_HD_EXTRA_MASK: Final = 0x7
TRC_EVENT_MASK: Final = 0x0FFFFFFF  # event:28
TRACE_EXTRA_MAX: Final = 7

TRC_CLS_SHIFT: Final = 16  # bits 16..27: main class (one-hot)
TRC_SUBCLS_SHIFT: Final = 12  # bits 12..15
TRC_MINOR_MASK: Final = 0xFFF

# Trace classes
TRC_GEN: Final = 0x0001F000
TRC_SCHED: Final = 0x0002F000
TRC_DOM0OP: Final = 0x0004F000
TRC_HVM: Final = 0x0008F000
TRC_MEM: Final = 0x0010F000
TRC_PV: Final = 0x0020F000
TRC_SHADOW: Final = 0x0040F000
TRC_HW: Final = 0x0080F000
TRC_GUEST: Final = 0x0800F000
TRC_ALL: Final = 0x0FFFF000

# Subclasses
TRC_SCHED_MIN: Final = 0x00021000
TRC_SCHED_CLASS: Final = 0x00022000
TRC_SCHED_VERBOSE: Final = 0x00028000
TRC_DOM0_DOMOPS: Final = 0x00041000
TRC_HVM_ENTRYEXIT: Final = 0x00081000
TRC_HVM_HANDLER: Final = 0x00082000
TRC_HVM_EMUL: Final = 0x00084000
TRC_PV_ENTRY: Final = 0x00201000
TRC_PV_SUBCALL: Final = 0x00202000
TRC_HW_PM: Final = 0x00801000
TRC_HW_IRQ: Final = 0x00802000

TRC_64_FLAG: Final = 0x100

# TRC_GEN events
TRC_LOST_RECORDS: Final = TRC_GEN + 1
TRC_TRACE_WRAP_BUFFER: Final = TRC_GEN + 2
TRC_TRACE_CPU_CHANGE: Final = TRC_GEN + 3

# Events documented in docs/xen-abi.md §5
TRC_SCHED_RUNSTATE_CHANGE: Final = TRC_SCHED_MIN + 1
TRC_SCHED_CONTINUE_RUNNING: Final = TRC_SCHED_MIN + 2
TRC_SCHED_DOM_ADD: Final = TRC_SCHED_VERBOSE + 1
TRC_SCHED_DOM_REM: Final = TRC_SCHED_VERBOSE + 2
TRC_SCHED_SLEEP: Final = TRC_SCHED_VERBOSE + 3
TRC_SCHED_WAKE: Final = TRC_SCHED_VERBOSE + 4
TRC_SCHED_YIELD: Final = TRC_SCHED_VERBOSE + 5
TRC_SCHED_BLOCK: Final = TRC_SCHED_VERBOSE + 6
TRC_SCHED_SHUTDOWN: Final = TRC_SCHED_VERBOSE + 7
TRC_SCHED_CTL: Final = TRC_SCHED_VERBOSE + 8
TRC_SCHED_ADJDOM: Final = TRC_SCHED_VERBOSE + 9
TRC_SCHED_SWITCH: Final = TRC_SCHED_VERBOSE + 10
TRC_SCHED_S_TIMER_FN: Final = TRC_SCHED_VERBOSE + 11
TRC_SCHED_T_TIMER_FN: Final = TRC_SCHED_VERBOSE + 12
TRC_SCHED_DOM_TIMER_FN: Final = TRC_SCHED_VERBOSE + 13
TRC_SCHED_SWITCH_INFPREV: Final = TRC_SCHED_VERBOSE + 14
TRC_SCHED_SWITCH_INFNEXT: Final = TRC_SCHED_VERBOSE + 15
TRC_SCHED_SHUTDOWN_CODE: Final = TRC_SCHED_VERBOSE + 16
TRC_SCHED_SWITCH_INFCONT: Final = TRC_SCHED_VERBOSE + 17
TRC_DOM0_DOM_ADD: Final = TRC_DOM0_DOMOPS + 1
TRC_DOM0_DOM_REM: Final = TRC_DOM0_DOMOPS + 2
TRC_MEM_PAGE_GRANT_MAP: Final = TRC_MEM + 1
TRC_MEM_PAGE_GRANT_UNMAP: Final = TRC_MEM + 2
TRC_MEM_PAGE_GRANT_TRANSFER: Final = TRC_MEM + 3
TRC_PV_HYPERCALL_V2: Final = TRC_PV_ENTRY + 13
TRC_PV_HYPERCALL_SUBCALL: Final = TRC_PV_SUBCALL + 14
TRC_HW_IRQ_HANDLED: Final = TRC_HW_IRQ + 8

# Names of the one-hot main classes (bits 16..27 of the event id, shifted down).
CLASS_NAMES: Final[dict[int, str]] = {
    TRC_GEN >> TRC_CLS_SHIFT: "gen",
    TRC_SCHED >> TRC_CLS_SHIFT: "sched",
    TRC_DOM0OP >> TRC_CLS_SHIFT: "dom0op",
    TRC_HVM >> TRC_CLS_SHIFT: "hvm",
    TRC_MEM >> TRC_CLS_SHIFT: "mem",
    TRC_PV >> TRC_CLS_SHIFT: "pv",
    TRC_SHADOW >> TRC_CLS_SHIFT: "shadow",
    TRC_HW >> TRC_CLS_SHIFT: "hw",
    TRC_GUEST >> TRC_CLS_SHIFT: "guest",
}

# xentrace: header word of every window, TRC_TRACE_CPU_CHANGE with 2 extra words.
CPU_CHANGE_HEADER: Final = TRC_TRACE_CPU_CHANGE | (2 << TRC_HD_EXTRA_SHIFT)
CPU_CHANGE_SIZE: Final = 12
LOST_RECORDS_WORDS: Final = 4

# Xen supports at most 4096 pCPUs (NR_CPUS); a larger cpu field is garbage.
MAX_CPUS: Final = 4096


def event_class(event: int) -> int:
    """Main class bits 16..27 of an event id (``TRC_GUEST >> 16`` = 0x800)."""
    return (event >> TRC_CLS_SHIFT) & 0xFFF


def event_subclass(event: int) -> int:
    """Subclass bits 12..15 of an event id."""
    return (event >> TRC_SUBCLS_SHIFT) & 0xF


def event_minor(event: int) -> int:
    """Minor bits 0..11 of an event id."""
    return event & TRC_MINOR_MASK


# --- declarations ------------------------------------------------------------

# The first word of a t_rec. C bit-fields of a little-endian u32 fill from bit 0,
# so after swapping to MSB-first the flag comes first, then extra_u32, then event.
t_rec_header = ByteSwapped(
    BitStruct(
        "cycles_included" / Flag,
        "extra_u32" / BitsInteger(3),
        "event" / BitsInteger(28),
    )
)
"""* ``struct t_rec`` bit-field word: ``event:28, extra_u32:3, cycles_included:1``."""

t_rec = Struct(
    "header" / t_rec_header,
    # cycles_lo then cycles_hi: one little-endian u64.
    "cycles" / If(this.header.cycles_included, Int64ul),
    "extra" / Array(this.header.extra_u32, Int32ul),
)
"""* One trace record: header word, optional TSC, 0..7 extra words (4..40 bytes)."""

cpu_change_record = Struct(
    "header" / Const(CPU_CHANGE_HEADER, Int32ul),
    "cpu" / Int32sl,
    "window_size" / Int32ul,
)
"""* ``struct cpu_change_record`` (xentrace.c): the 12-byte header of each window."""

lost_records_payload = Struct(
    "lost_records" / Int32ul,
    "did" / Int16ul,
    "vid" / Int16ul,
    "first_tsc" / Int64ul,
)
"""* TRC_LOST_RECORDS extra words (trace.c: u32 lost_records; u16 did, vid; u64 first_tsc)."""

# TRC_TRACE_WRAP_BUFFER fills the bytes to the end of the per-CPU buffer; its
# extra words are stale buffer contents. It is an ordinary t_rec whose length
# is the filler size (a TSC is added only when the filler exceeds 32 bytes), so
# t_rec declares it; this constant names it for readers.
trace_wrap_buffer_event = TRC_TRACE_WRAP_BUFFER

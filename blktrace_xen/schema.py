"""The normalised tables of blktrace-xen, defined once.

Data flows one way: bytes -> ``events`` / ``snapshots`` -> ``requests`` /
``responses`` / ``control`` -> ``io`` -> ``findings``. Every producer emits
exactly the schema declared here (column order included) and every consumer
may rely on it. docs/schemas.md is the user-facing reference of these tables;
keep the two in step (tests/test_schema.py checks that every column is
documented).

Conventions
-----------
* A ring is keyed by ``(domid, vdev, queue)``: frontend domain id, virtual
  device number as in xenstore (51712 = xvda), queue index (0 without
  multi-queue).
* ``ns`` is nanoseconds on the input's time base. For xentrace input it is
  xenalyze's: ``((tsc - first_tsc) << 10) // cpu_qhz``. For ring captures it is
  the capture timestamp. ``tsc`` is kept wherever known so that a trace and a
  capture taken in the same dom0 line up on one clock.
* Ring indices (``idx``, ``req_prod`` ...) are u32 and wrap modulo 2**32: all
  arithmetic on them is unsigned difference.
* Nullable columns are null when the source could not observe the value (a
  request seen only through its response has a null ``sector_number``); a value
  is never invented.
"""

from __future__ import annotations

from typing import Any, Final

import polars as pl

from blktrace_xen.errors import SchemaError

SEVERITIES: Final = ("info", "low", "medium", "high", "critical")
Severity = pl.Enum(list(SEVERITIES))

SOURCES: Final = ("xentrace", "ringcap", "synth", "model", "agent")
Source = pl.Enum(list(SOURCES))

# How a request became known. "full": its slot was decoded as a request (or an
# instrumentation event described it). "via_response": only its response was
# seen (a polled capture saw the slot after it was reused): id, op, status and
# index are known; sector and segments are not.
REQUEST_SEEN: Final = ("full", "via_response")
RequestSeen = pl.Enum(list(REQUEST_SEEN))

CONTROL_KINDS: Final = (
    "xenbus_state",  # value = enum xenbus_state; side says whose state node
    "connect",
    "disconnect_request",
    "disconnect_done",
    "ring_map",
    "ring_unmap",
    "unbind",
    "bind",
    "suspend",
    "resume",
    "domain_create",
    "domain_destroy",
    "domain_shutdown",
    "handoff",  # migration: the target was started
    "shutdown_done",  # seed 004: the backend published that its I/O is done
    "ref_get",
    "ref_put",
    "index_discontinuity",  # inferred from the ring indices, not observed directly
    "xenstore",  # any other xenstore write seen by the capture: detail = "path=value"
)
ControlKind = pl.Enum(list(CONTROL_KINDS))

SIDES: Final = ("front", "back", "toolstack", "hypervisor", "unknown")
Side = pl.Enum(list(SIDES))

RING_KEY: Final = ("domid", "vdev", "queue")


def _schema(columns: dict[str, Any]) -> pl.Schema:
    return pl.Schema(columns)


_RING_KEY_SCHEMA: Final[dict[str, pl.DataType]] = {
    "domid": pl.UInt16(),
    "vdev": pl.UInt32(),
    "queue": pl.UInt16(),
}

# Every decoded xentrace record, in the merged time order xenalyze uses.
# d0..d6 hold the extra words; words beyond n_extra are 0.
EVENTS_SCHEMA: Final = _schema(
    {
        "cpu": pl.UInt16,
        "tsc": pl.UInt64,  # own TSC, or the CPU's last TSC for records without one
        "has_tsc": pl.Boolean,
        "ns": pl.Int64,
        "event": pl.UInt32,  # the 28-bit event id
        "class": pl.UInt16,  # bits 16..27 (TRC_GEN = 0x001, TRC_GUEST = 0x800)
        "subclass": pl.UInt8,  # bits 12..15
        "minor": pl.UInt16,  # bits 0..11
        "n_extra": pl.UInt8,
        "d0": pl.UInt32,
        "d1": pl.UInt32,
        "d2": pl.UInt32,
        "d3": pl.UInt32,
        "d4": pl.UInt32,
        "d5": pl.UInt32,
        "d6": pl.UInt32,
        "file_offset": pl.UInt64,
    }
)

# One row per ring snapshot (ring capture: one pcapng enhanced packet block).
SNAPSHOTS_SCHEMA: Final = _schema(
    {
        **_RING_KEY_SCHEMA,
        "snap": pl.UInt32,  # index of the snapshot within its ring, from 0
        "ns": pl.Int64,
        "tsc": pl.UInt64,  # null when the capture did not record it
        "req_prod": pl.UInt32,
        "req_event": pl.UInt32,
        "rsp_prod": pl.UInt32,
        "rsp_event": pl.UInt32,
        "nr_ents": pl.UInt16,
    }
)

# Requests as published by the frontend.
REQUESTS_SCHEMA: Final = _schema(
    {
        **_RING_KEY_SCHEMA,
        "session": pl.UInt32,
        "ns": pl.Int64,  # when published (pushed), or first observed
        "tsc": pl.UInt64,
        "consumed_ns": pl.Int64,  # when the backend consumed it, if observed
        "idx": pl.UInt32,  # ring index, null if the source does not tell
        "id": pl.UInt64,
        "operation": pl.UInt8,  # BLKIF_OP_*; for indirect, 6
        "indirect_op": pl.UInt8,  # for BLKIF_OP_INDIRECT, else null
        "nr_segments": pl.UInt16,
        "sector_number": pl.UInt64,
        "nr_sectors": pl.UInt64,  # 512-byte sectors covered (sum of segments / discard)
        "seen": RequestSeen,
        "source": Source,
    }
)

RESPONSES_SCHEMA: Final = _schema(
    {
        **_RING_KEY_SCHEMA,
        "session": pl.UInt32,
        "ns": pl.Int64,  # when published by the backend, or first observed
        "tsc": pl.UInt64,
        "consumed_ns": pl.Int64,  # when the frontend consumed it, if observed
        "idx": pl.UInt32,
        "id": pl.UInt64,
        "operation": pl.UInt8,
        "status": pl.Int16,
        "pad_nonzero": pl.Boolean,  # response padding bytes not zero (XSA-216), null if unknown
        "source": Source,
    }
)

CONTROL_SCHEMA: Final = _schema(
    {
        **_RING_KEY_SCHEMA,  # vdev / queue null for domain-wide events
        "ns": pl.Int64,
        "tsc": pl.UInt64,
        "kind": ControlKind,
        "side": Side,
        "value": pl.Int64,  # e.g. the xenbus state number; null when meaningless
        "detail": pl.String,
        "source": Source,
    }
)

# Requests paired with their responses (one row per request).
IO_SCHEMA: Final = _schema(
    {
        **_RING_KEY_SCHEMA,
        "session": pl.UInt32,
        "id": pl.UInt64,
        "operation": pl.UInt8,  # the effective op (indirect_op for indirect requests)
        "req_idx": pl.UInt32,
        "rsp_idx": pl.UInt32,
        "req_ns": pl.Int64,
        "rsp_ns": pl.Int64,  # null: never answered in the trace
        "latency_ns": pl.Int64,
        "status": pl.Int16,
        "sector_number": pl.UInt64,
        "nr_sectors": pl.UInt64,
        "seen": RequestSeen,
        "reorder": pl.Int64,  # completion rank minus issue rank within the ring session
        "outcome": pl.String,  # "completed", or why not: "trace_end", "disconnect", ...
    }
)

FINDINGS_SCHEMA: Final = _schema(
    {
        "rule": pl.String,  # stable rule id, e.g. "BX-IDX-001"
        "severity": Severity,
        **_RING_KEY_SCHEMA,
        "session": pl.UInt32,
        "ns": pl.Int64,
        "ns_end": pl.Int64,
        "id": pl.UInt64,  # the request id concerned, if any
        "idx": pl.UInt32,  # the ring index concerned, if any
        "message": pl.String,  # one line a person can act on
        "evidence": pl.String,  # JSON object with the evidence columns
        "confidence": pl.Float64,  # 1.0, lowered when lost records overlap the window
    }
)

# Ring parameters, one row per ring (from the capture's interface description
# or from xenstore / instrumentation events).
RINGS_SCHEMA: Final = _schema(
    {
        **_RING_KEY_SCHEMA,
        "abi": pl.String,  # "x86_64-abi" | "x86_32-abi" | "arm-abi"
        "ring_page_order": pl.UInt8,
        "nr_ents": pl.UInt16,
        "backend_domid": pl.UInt16,
    }
)

# Ring entries a producer overwrote before any snapshot saw them: counted, never invented.
GAPS_SCHEMA: Final = _schema(
    {
        **_RING_KEY_SCHEMA,
        "ns": pl.Int64,  # the snapshot that revealed the gap
        "prev_ns": pl.Int64,  # the snapshot before it
        "producer": pl.String,  # "req" or "rsp"
        "from_idx": pl.UInt32,  # first unseen index
        "count": pl.UInt32,  # unseen entries
    }
)

# TRC_LOST_RECORDS: the trace buffer overflowed and records were dropped.
LOST_SCHEMA: Final = _schema(
    {
        "cpu": pl.UInt16,
        "ns": pl.Int64,  # when the loss was recorded
        "first_ns": pl.Int64,  # time of the first lost record (from first_tsc)
        "count": pl.UInt32,
        "domid": pl.UInt16,  # domain / vcpu running when the loss began
        "vcpu": pl.UInt16,
    }
)

# Grant map / unmap seen by the hypervisor (TRC_MEM), with the running balance.
GRANTS_SCHEMA: Final = _schema(
    {
        "ns": pl.Int64,
        "cpu": pl.UInt16,
        "granting_domid": pl.UInt16,
        "op": pl.String,  # "map" | "unmap" | "transfer"
        "balance": pl.Int64,  # maps minus unmaps so far for this granting domain
    }
)

# A published, unanswered request slot whose bytes changed between two
# snapshots (the frontend rewrote a request the backend may already have read:
# the double-fetch hazard of XSA-155).
MUTATIONS_SCHEMA: Final = _schema(
    {
        **_RING_KEY_SCHEMA,
        "ns": pl.Int64,
        "prev_ns": pl.Int64,
        "idx": pl.UInt32,
        "fields": pl.String,  # comma-separated names of the fields that changed
    }
)

# Pairing facts the io table cannot hold (one row per anomalous response or
# request): orphan / duplicate responses, op mismatches, ids reused while in
# flight. Built by blktrace_xen.streams.pairing; analyses turn them into findings.
PAIRING_KINDS: Final = ("orphan_response", "duplicate_response", "op_mismatch", "id_reused")
PairingKind = pl.Enum(list(PAIRING_KINDS))

PAIRING_SCHEMA: Final = _schema(
    {
        **_RING_KEY_SCHEMA,
        "session": pl.UInt32,
        "ns": pl.Int64,  # the response (or, for id_reused, the unanswered request)
        "idx": pl.UInt32,
        "id": pl.UInt64,
        "kind": PairingKind,
        "operation": pl.UInt8,  # as in the response (request for id_reused)
        "expected_operation": pl.UInt8,  # op_mismatch: the request's effective op
        "status": pl.Int16,
        "req_ns": pl.Int64,  # the request concerned, if any
        "req_idx": pl.UInt32,
        "prev_ns": pl.Int64,  # duplicate: the earlier response; id_reused: the reusing request
        "source": Source,
    }
)

TABLES: Final[dict[str, pl.Schema]] = {
    "events": EVENTS_SCHEMA,
    "snapshots": SNAPSHOTS_SCHEMA,
    "requests": REQUESTS_SCHEMA,
    "responses": RESPONSES_SCHEMA,
    "control": CONTROL_SCHEMA,
    "io": IO_SCHEMA,
    "findings": FINDINGS_SCHEMA,
    "rings": RINGS_SCHEMA,
    "gaps": GAPS_SCHEMA,
    "lost": LOST_SCHEMA,
    "grants": GRANTS_SCHEMA,
    "mutations": MUTATIONS_SCHEMA,
    "pairing": PAIRING_SCHEMA,
}


def empty(table: str) -> pl.DataFrame:
    """An empty frame with the schema of ``table``."""
    return pl.DataFrame(schema=TABLES[table])


def conform(df: pl.DataFrame, table: str) -> pl.DataFrame:
    """Select and cast ``df`` to the schema of ``table``; missing columns become null."""
    schema = TABLES[table]
    cols = []
    for name, dtype in schema.items():
        if name in df.columns:
            cols.append(pl.col(name).cast(dtype))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(cols)


def validate(df: pl.DataFrame, table: str) -> None:
    """Raise one SchemaError listing every column that is missing or mistyped."""
    schema = TABLES[table]
    problems = []
    for name, dtype in schema.items():
        if name not in df.schema:
            problems.append(f"column {name!r} missing")
        elif df.schema[name] != dtype:
            problems.append(f"column {name!r} is {df.schema[name]}, expected {dtype}")
    extra = [c for c in df.columns if c not in schema]
    if extra:
        problems.append(f"unexpected columns {extra}")
    if problems:
        raise SchemaError(table, problems)

"""Agent records of a ring capture -> one table per record kind (structs/agentcap.py).

The ring capture reader hands over the agent interface's packets as (ns,
bytes); this splits them by kind and unpacks each with the struct format its
declaration documents. A record too short for its kind, or of an unknown kind,
is counted in ``bad`` and named in a warning, never guessed at.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from blktrace_xen.structs.agentcap import BODY_FMT, HEAD_FMT, SLOT_BYTES, UNKNOWN_U32, Kind

_HEAD: Final = struct.Struct(HEAD_FMT)
_HEAD_COLS: Final = (
    "kind",
    "protocol",
    "domid",
    "vdev",
    "queue",
    "cpu",
    "tid",
    "ring",
    "nr_ents",
    "_reserved",
)
_BODY_COLS: Final[dict[Kind, tuple[str, ...]]] = {
    Kind.RSP_ENTRY: (
        "rsp_prod_pvt",
        "req_cons",
        "req_prod",
        "rsp_prod",
        "status",
        "operation",
        "_pad",
        "id",
    ),
    Kind.RSP_EXIT: ("entry_ns", "id", "idx", "rsp_prod_pvt"),
    Kind.CONSUME: ("rsp_prod_pvt", "req_cons", "req_prod", "rsp_prod", "nr_grants"),
    Kind.NOTIFY: ("rsp_prod_pvt", "req_cons", "req_prod", "rsp_prod"),
    Kind.RING: (
        "rsp_prod_pvt",
        "req_cons",
        "req_prod",
        "rsp_prod",
        "nr_ring_pages",
        "reason",
        "sring",
        "st_rd_req",
        "st_wr_req",
        "st_f_req",
        "st_ds_req",
    ),
    Kind.XENBUS: ("event", "frontend_state", "backend_state", "flags"),
    Kind.DISCONNECT: (
        "rsp_prod_pvt",
        "req_cons",
        "req_prod",
        "rsp_prod",
        "inflight",
        "_pad",
        "sring",
    ),
    Kind.DISCONNECT_RET: ("ret", "_pad"),
    Kind.UNMAP: ("grants", "_pad"),
    Kind.CLOCK: ("tsc", "realtime_ns", "mono_before_ns", "mono_after_ns"),
    Kind.LOST: ("count",),
    Kind.AGENT: ("what", "_pad"),
    Kind.SLOT: ("idx", "why", "entry_ns"),
}
# kinds with bytes after the fixed body: slot bytes, or a text
_TAIL: Final[dict[Kind, str]] = {
    Kind.RSP_ENTRY: "slot",
    Kind.SLOT: "slot",
    Kind.XENBUS: "nodename",
    Kind.AGENT: "text",
}
_BODY: Final = {k: struct.Struct(f) for k, f in BODY_FMT.items()}


@dataclass(slots=True)
class AgentTables:
    """One capture's agent records, a frame per kind (columns: ns, head fields, body fields)."""

    frames: dict[Kind, pl.DataFrame]
    bad: int = 0
    warnings: list[str] = field(default_factory=list)

    def get(self, kind: Kind) -> pl.DataFrame:
        frame = self.frames.get(kind)
        if frame is not None:
            return frame
        cols = ["ns", *_HEAD_COLS, *_BODY_COLS[kind]]
        if kind in _TAIL:
            cols.append(_TAIL[kind])
        return pl.DataFrame({c: [] for c in cols}, schema=_schema(kind, cols))

    @property
    def count(self) -> int:
        return sum(f.height for f in self.frames.values())


def _schema(kind: Kind, cols: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in cols:
        if c in ("slot", "nodename", "text"):
            out[c] = pl.Binary if c == "slot" else pl.String
        elif c in ("status", "inflight", "ret", "nr_grants"):
            out[c] = pl.Int64
        else:
            out[c] = pl.UInt64
    out["ns"] = pl.Int64
    return out


def agent_tables(records: Sequence[tuple[int, bytes]], path: str = "") -> AgentTables:
    """Split and unpack agent records (see module doc)."""
    rows: dict[Kind, list[tuple[Any, ...]]] = {}
    bad = 0
    warnings: list[str] = []
    for i, (ns, rec) in enumerate(records):
        try:
            head = _HEAD.unpack_from(rec, 0)
            kind = Kind(head[0])
            body = _BODY[kind]
            values = body.unpack_from(rec, _HEAD.size)
            tail_at = _HEAD.size + body.size
            row: tuple[Any, ...] = (ns, *head, *values)
            if kind in _TAIL:
                tail = rec[tail_at:]
                if _TAIL[kind] == "slot":
                    if len(tail) != SLOT_BYTES:
                        raise struct.error(f"slot of {len(tail)} bytes")
                    row += (tail,)
                else:
                    row += (tail.decode("utf-8", "replace"),)
            elif len(rec) != tail_at:
                raise struct.error(f"{len(rec) - tail_at} stray bytes")
        except (struct.error, ValueError) as exc:
            bad += 1
            if bad <= 5:
                warnings.append(f"{path}: agent record #{i} ({len(rec)} bytes) skipped: {exc}")
            continue
        rows.setdefault(kind, []).append(row)
    frames = {}
    for kind, rs in rows.items():
        cols = ["ns", *_HEAD_COLS, *_BODY_COLS[kind]]
        if kind in _TAIL:
            cols.append(_TAIL[kind])
        frames[kind] = pl.DataFrame(rs, schema=_schema(kind, cols), orient="row").sort(
            "ns", maintain_order=True
        )
    return AgentTables(_fill_vdevs(frames), bad, warnings)


def _fill_vdevs(frames: dict[Kind, pl.DataFrame]) -> dict[Kind, pl.DataFrame]:
    """A ring's vdev on the records before the agent first read it.

    Only RING records carry it (the backend device's node name); the line decoder
    copies it onto the ring's later records, and here a ring's earlier records take it
    from the ring's next RING record (a kernel address is reused by later rings, so the
    nearest one in time, never a global last).
    """
    rings = frames.get(Kind.RING)
    if rings is None or rings.height == 0:
        return frames
    known = (
        rings.filter(pl.col("vdev") != UNKNOWN_U32)
        .select("ring", "ns", pl.col("vdev").alias("_v"))
        .sort("ns")
    )
    out = {}
    for kind, f in frames.items():
        if kind == Kind.XENBUS or not (f["vdev"] == UNKNOWN_U32).any():
            out[kind] = f
            continue
        filled = (
            f.with_row_index("_row")
            .sort("ns")
            .join_asof(known, on="ns", by="ring", strategy="forward", check_sortedness=False)
            .sort("_row")
        )
        out[kind] = filled.with_columns(
            pl.when(pl.col("vdev") == UNKNOWN_U32)
            .then(pl.col("_v").fill_null(UNKNOWN_U32))
            .otherwise(pl.col("vdev"))
            .alias("vdev")
        ).drop("_v", "_row")
    return out


__all__ = ["AgentTables", "agent_tables"]

"""Requests, responses and control from decoded xentrace events.

Two kinds of records feed the streams: the blkif instrumentation events
(TRC_GUEST, defined by name in ``formats/blkif.toml``) and the hypervisor
events that matter without instrumentation (domain create / destroy /
shutdown, grant map / unmap). Every extraction is a filter plus column
expressions over the events frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import polars as pl

from blktrace_xen import schema
from blktrace_xen.catalog import Catalog, EventDef, field_columns, load_catalog
from blktrace_xen.streams import Streams
from blktrace_xen.streams.assemble import assemble
from blktrace_xen.streams.grants import grants_from_events

RING: Final = list(schema.RING_KEY)

TRC_DOM0_DOM_ADD: Final = 0x00041001
TRC_DOM0_DOM_REM: Final = 0x00041002
TRC_SCHED_SHUTDOWN: Final = 0x00028007
NR_SECTORS_SATURATED: Final = 0xFFFFFFFF

_SIDES: Final = {0: "front", 1: "back"}
_PROTOCOLS: Final = {1: "x86_32-abi", 2: "x86_64-abi", 3: "arm-abi"}

# blkif event name -> control kind
_CONTROL: Final = {
    "blkif_xenbus_state": "xenbus_state",
    "blkif_ring_map": "ring_map",
    "blkif_ring_unmap": "ring_unmap",
    "blkif_ref_get": "ref_get",
    "blkif_ref_put": "ref_put",
    "blkif_suspend": "suspend",
    "blkif_resume": "resume",
    "blkif_disconnect_req": "disconnect_request",
    "blkif_disconnect_done": "disconnect_done",
    "blkif_unbind": "unbind",
    "blkif_bind": "bind",
}
# which field becomes control.value
_VALUE_FIELD: Final = {
    "blkif_xenbus_state": "state",
    "blkif_ring_map": "req_prod",
    "blkif_ring_unmap": "inflight",
    "blkif_ref_get": "refcnt",
    "blkif_ref_put": "refcnt",
    "blkif_suspend": "inflight",
    "blkif_resume": "inflight",
    "blkif_disconnect_req": "inflight",
    "blkif_disconnect_done": "result",
}
# Every name the builder reads; the catalogs may define others, which it ignores
# (the generic event decoder still shows them).
BLKIF_EVENT_NAMES: Final = (
    "blkif_req_push",
    "blkif_req_sector",
    "blkif_req_consume",
    "blkif_rsp_push",
    "blkif_rsp_consume",
    *_CONTROL,
)


def select_events(events: pl.DataFrame, ev: EventDef) -> pl.DataFrame:
    """The records of ``events`` that are ``ev``, with its fields extracted.

    Keeps ``ns``, ``tsc``, ``cpu`` and ``_ord`` (the row's position in the
    merged time order, the tie-break for records that share a TSC).
    """
    base = events if "_ord" in events.columns else events.with_row_index("_ord")
    hit = base.filter((pl.col("event") & ev.mask) == ev.id)
    return hit.select(pl.col("_ord").cast(pl.Int64), "ns", "tsc", "cpu", *field_columns(ev))


def _rows(events: pl.DataFrame, catalog: Catalog, name: str) -> pl.DataFrame | None:
    ev = catalog.get(name)
    if ev is None:
        return None
    rows = select_events(events, ev)
    return rows if rows.height else None


def _occurrence(keys: list[str]) -> pl.Expr:
    """k for the k-th row with these key values (0-based), in frame order."""
    return pl.int_range(0, pl.len(), dtype=pl.UInt32).over(keys).alias("_occ")


def _attach_by_occurrence(
    left: pl.DataFrame, right: pl.DataFrame | None, keys: list[str], cols: dict[str, str]
) -> pl.DataFrame:
    """Join the k-th ``right`` row of each key onto the k-th ``left`` row (``cols``: src -> dst)."""
    if right is None:
        return left.with_columns(
            [pl.lit(None).alias(dst) for dst in cols.values() if dst not in left.columns]
        )
    lhs = left.with_columns(_occurrence(keys))
    rhs = right.with_columns(_occurrence(keys)).select(
        *keys, "_occ", *[pl.col(src).alias(dst) for src, dst in cols.items()]
    )
    dropped = [dst for dst in cols.values() if dst in lhs.columns]
    return (
        lhs.drop(dropped)
        .join(rhs, on=[*keys, "_occ"], how="left", nulls_equal=True)
        .sort("_ord")
        .drop("_occ")
    )


def requests_from_events(events: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    """REQUESTS_SCHEMA rows (plus ``_ord``) from req_push / req_sector / req_consume."""
    push = _rows(events, catalog, "blkif_req_push")
    consume = _rows(events, catalog, "blkif_req_consume")
    sector = _rows(events, catalog, "blkif_req_sector")
    keys = [*RING, "idx"]
    parts = []
    if push is not None:
        req = push.with_columns(
            pl.when(pl.col("nr_sectors") == NR_SECTORS_SATURATED)
            .then(None)
            .otherwise(pl.col("nr_sectors"))
            .alias("nr_sectors")
        )
        req = _attach_by_occurrence(req, sector, keys, {"sector_number": "sector_number"})
        req = _attach_by_occurrence(req, consume, keys, {"ns": "consumed_ns"})
        parts.append(req)
    if consume is not None:
        # A ring instrumented only in the backend: the consume is the first sight.
        seen_rings = push.select(RING).unique() if push is not None else None
        only = consume
        if seen_rings is not None:
            only = consume.join(seen_rings, on=RING, how="anti", nulls_equal=True)
        if only.height:
            parts.append(only.with_columns(pl.col("ns").alias("consumed_ns")))
    if not parts:
        return schema.empty("requests").with_columns(pl.lit(0, pl.Int64).alias("_ord"))
    req = pl.concat(
        [
            p.with_columns(
                pl.when(pl.col("indirect_op").is_not_null() & (pl.col("operation") == 6))
                .then(pl.col("indirect_op"))
                .alias("indirect_op")
            )
            for p in parts
        ],
        how="diagonal_relaxed",
    ).sort("_ord")
    req = req.with_columns(
        pl.lit("full").alias("seen"), pl.lit("xentrace").alias("source"), pl.lit(0).alias("session")
    )
    return schema.conform(req, "requests").with_columns(req["_ord"])


def responses_from_events(events: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    """RESPONSES_SCHEMA rows (plus ``_ord``) from rsp_push / rsp_consume."""
    push = _rows(events, catalog, "blkif_rsp_push")
    consume = _rows(events, catalog, "blkif_rsp_consume")
    keys = [*RING, "idx"]
    parts = []
    if push is not None:
        parts.append(_attach_by_occurrence(push, consume, keys, {"ns": "consumed_ns"}))
    if consume is not None:
        only = consume
        if push is not None:
            only = consume.join(push.select(RING).unique(), on=RING, how="anti", nulls_equal=True)
        if only.height:
            parts.append(only.with_columns(pl.col("ns").alias("consumed_ns")))
    if not parts:
        return schema.empty("responses").with_columns(pl.lit(0, pl.Int64).alias("_ord"))
    rsp = pl.concat(parts, how="diagonal_relaxed").sort("_ord")
    rsp = rsp.with_columns(pl.lit("xentrace").alias("source"), pl.lit(0).alias("session"))
    return schema.conform(rsp, "responses").with_columns(rsp["_ord"])


def control_from_events(events: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    """CONTROL_SCHEMA rows (plus ``_ord``): blkif control events and domain lifecycle."""
    parts: list[pl.DataFrame] = []
    for name, kind in _CONTROL.items():
        rows = _rows(events, catalog, name)
        if rows is None:
            continue
        value_field = _VALUE_FIELD.get(name)
        side = (
            pl.col("side").replace_strict(_SIDES, default="unknown", return_dtype=pl.String)
            if "side" in rows.columns
            else pl.lit("back")
        )
        detail: pl.Expr = pl.lit(None, pl.String)
        if name == "blkif_ring_map":
            detail = pl.format(
                "ring_page_order={} protocol={} req_prod={} rsp_prod={} backend_domid={}",
                "ring_page_order",
                "protocol",
                "req_prod",
                "rsp_prod",
                "backend_domid",
            )
        elif name == "blkif_ring_unmap":
            detail = pl.format("req_prod={} rsp_prod={}", "req_prod", "rsp_prod")
        parts.append(
            rows.select(
                "_ord",
                *RING,
                "ns",
                "tsc",
                pl.lit(kind).alias("kind"),
                side.alias("side"),
                (
                    pl.col(value_field).cast(pl.Int64) if value_field else pl.lit(None, pl.Int64)
                ).alias("value"),
                detail.alias("detail"),
            )
        )
    base = events if "_ord" in events.columns else events.with_row_index("_ord")
    dom = base.filter(
        pl.col("event").is_in([TRC_DOM0_DOM_ADD, TRC_DOM0_DOM_REM, TRC_SCHED_SHUTDOWN])
        & (pl.col("n_extra") >= 1)
    )
    if dom.height:
        parts.append(
            dom.select(
                pl.col("_ord").cast(pl.Int64),
                pl.col("d0").cast(pl.UInt16, strict=False).alias("domid"),
                pl.lit(None, pl.UInt32).alias("vdev"),
                pl.lit(None, pl.UInt16).alias("queue"),
                "ns",
                "tsc",
                pl.col("event")
                .replace_strict(
                    {
                        TRC_DOM0_DOM_ADD: "domain_create",
                        TRC_DOM0_DOM_REM: "domain_destroy",
                        TRC_SCHED_SHUTDOWN: "domain_shutdown",
                    },
                    return_dtype=pl.String,
                )
                .alias("kind"),
                pl.lit("hypervisor").alias("side"),
                pl.when(pl.col("event") == TRC_SCHED_SHUTDOWN)
                .then(pl.col("d2").cast(pl.Int64))
                .alias("value"),
                pl.lit(None, pl.String).alias("detail"),
            )
        )
    if not parts:
        return schema.empty("control").with_columns(pl.lit(0, pl.Int64).alias("_ord"))
    ctl = pl.concat(parts, how="diagonal_relaxed").sort("_ord")
    ctl = ctl.with_columns(pl.lit("xentrace").alias("source"))
    return schema.conform(ctl, "control").with_columns(ctl["_ord"])


def rings_from_events(events: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    """RINGS_SCHEMA rows from the last ring_map of each ring (its latest geometry)."""
    rows = _rows(events, catalog, "blkif_ring_map")
    if rows is None:
        return schema.empty("rings")
    last = rows.group_by(RING, maintain_order=True).last()
    return schema.conform(
        last.select(
            *RING,
            pl.col("protocol")
            .replace_strict(_PROTOCOLS, default=None, return_dtype=pl.String)
            .alias("abi"),
            "ring_page_order",
            (pl.lit(32, pl.UInt32) * (pl.lit(2, pl.UInt32).pow(pl.col("ring_page_order"))))
            .cast(pl.UInt16, strict=False)
            .alias("nr_ents"),
            "backend_domid",
        ),
        "rings",
    )


def event_parts(
    events: pl.DataFrame,
    *,
    lost: pl.DataFrame | None = None,
    catalogs: Sequence[Path] = (),
) -> dict[str, pl.DataFrame]:
    """Frames (pre-assembly) from an EVENTS_SCHEMA frame, on the trace's time base."""
    catalog = load_catalog(catalogs)
    ordered = events.with_row_index("_ord").with_columns(pl.col("_ord").cast(pl.Int64))
    return {
        "requests": requests_from_events(ordered, catalog).drop("_ord"),
        "responses": responses_from_events(ordered, catalog).drop("_ord"),
        "control": control_from_events(ordered, catalog).drop("_ord"),
        "rings": rings_from_events(ordered, catalog),
        "grants": grants_from_events(events),
        "lost": schema.empty("lost") if lost is None else lost,
    }


def streams_from_events(
    events: pl.DataFrame,
    *,
    lost: pl.DataFrame | None = None,
    catalogs: Sequence[Path] = (),
    meta: dict[str, Any] | None = None,
) -> Streams:
    """:class:`Streams` from an EVENTS_SCHEMA frame (as ``read_xentrace`` returns).

    ``catalogs`` are extra event catalogs loaded after the shipped ones
    (:func:`~blktrace_xen.catalog.load_catalog`).
    """
    return assemble(**event_parts(events, lost=lost, catalogs=catalogs), meta=dict(meta or {}))


__all__ = [
    "BLKIF_EVENT_NAMES",
    "control_from_events",
    "event_parts",
    "requests_from_events",
    "responses_from_events",
    "rings_from_events",
    "select_events",
    "streams_from_events",
]

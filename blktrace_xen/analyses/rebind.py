"""Rebind rules: a backend that (re)attaches to a live ring must take the ring's counters."""

from __future__ import annotations

from typing import Final

import polars as pl

from blktrace_xen.analyses.emit import HALF, RING, emit, ms, nr_ents, ring_label, u32_ahead
from blktrace_xen.analyses.lifecycle import ring_control
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import rule
from blktrace_xen.streams import Streams

# xenbus_state values.
_INITIALISING, _INITIALISED, _CONNECTED, _CLOSED = 1, 3, 4, 6
# The frontend starting its ring afresh: its producers restart, so older
# observations no longer describe the ring the backend maps.
_FRONT_RESTART = ("resume", "domain_create", "handoff")
# From a capture alone: a re-bound backend that answers nothing for this long
# while requests are pending is taken as halted (a healthy backend answers
# within a disk latency; the synthetic and real disks answer in < 5 ms).
SILENT_AFTER_BIND_NS = 10_000_000


def _counter(name: str) -> pl.Expr:
    return pl.col("detail").str.extract(rf"{name}=(\d+)").cast(pl.Int64)


def _front_restarts(ctl: pl.LazyFrame) -> pl.LazyFrame:
    kind = pl.col("kind")
    front = pl.col("side").cast(pl.String) == "front"
    restart = (
        kind.is_in(_FRONT_RESTART)
        | ((kind == "ring_map") & front)
        | (
            (kind == "xenbus_state")
            & front
            & pl.col("value").is_between(_INITIALISING, _INITIALISED)
        )
    )
    return ctl.filter(restart).select(*RING, pl.col("ns").alias("restart_ns")).sort("restart_ns")


def _asof(left: pl.LazyFrame, right: pl.LazyFrame, on: str, right_on: str) -> pl.LazyFrame:
    """The last ``right`` row of each ring at or before ``left``'s ``on``."""
    return left.sort(on).join_asof(
        right.sort(right_on),
        left_on=on,
        right_on=right_on,
        by=RING,
        strategy="backward",
        check_sortedness=False,
    )


def _observed(streams: Streams, maps: pl.LazyFrame) -> pl.LazyFrame:
    """``maps`` with the ring's producers last seen before each map.

    ``obs_req_prod`` / ``obs_rsp_prod`` and their times, each the latest of the
    ring's events (a request or response at index i: producer i + 1) and its
    snapshots; ``next_req_idx`` the first request index after the map.
    """
    # Only rings with a map are looked up: the joins below sort what they are
    # given, and a trace has millions of requests but a handful of maps.
    mapped = maps.select(RING).unique()

    def of_mapped(frame: pl.DataFrame) -> pl.LazyFrame:
        return frame.lazy().join(mapped, on=RING, how="semi", nulls_equal=True)

    snaps = of_mapped(streams.snapshots).select(*RING, "ns", "req_prod", "rsp_prod")
    out = maps
    for side, frame in (("req", streams.requests), ("rsp", streams.responses)):
        ev = (
            of_mapped(frame)
            .filter(pl.col("idx").is_not_null())
            .select(*RING, pl.col("ns").alias(f"_{side}_ev_ns"), pl.col("idx").alias("_i"))
            .with_columns((pl.col("_i").cast(pl.Int64) + 1).alias(f"_{side}_ev"))
            .drop("_i")
        )
        snap = snaps.select(
            *RING,
            pl.col("ns").alias(f"_{side}_snap_ns"),
            pl.col(f"{side}_prod").cast(pl.Int64).alias(f"_{side}_snap"),
        )
        out = _asof(out, ev, "map_ns", f"_{side}_ev_ns")
        out = _asof(out, snap, "map_ns", f"_{side}_snap_ns")
        snap_later = pl.col(f"_{side}_snap_ns").fill_null(-1) >= pl.col(f"_{side}_ev_ns").fill_null(
            -1
        )
        out = out.with_columns(
            pl.when(snap_later)
            .then(pl.col(f"_{side}_snap"))
            .otherwise(pl.col(f"_{side}_ev"))
            .alias(f"obs_{side}_prod"),
            pl.when(snap_later)
            .then(pl.col(f"_{side}_snap_ns"))
            .otherwise(pl.col(f"_{side}_ev_ns"))
            .alias(f"obs_{side}_ns"),
        )
    nxt = (
        of_mapped(streams.requests)
        .filter(pl.col("idx").is_not_null())
        .select(*RING, pl.col("ns").alias("_next_ns"), pl.col("idx").alias("next_req_idx"))
        .sort("_next_ns")
    )
    return out.sort("map_ns").join_asof(
        nxt,
        left_on="map_ns",
        right_on="_next_ns",
        by=RING,
        strategy="forward",
        allow_exact_matches=False,
        check_sortedness=False,
    )


# What a map-based finding shows: the backend's counters at the map, the ring's
# producers last seen before it, and how far apart they are.
_MAP_EVIDENCE: Final = (
    "map_ns",
    "req_cons",
    "rsp_prod_pvt",
    "obs_req_prod",
    "obs_rsp_prod",
    "obs_req_ns",
    "obs_rsp_ns",
    "nr_ents",
    "rsp_lag",
    "unread",
)


def _map_resets(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Backend ``ring_map`` rows whose counters lag the live ring's producers."""
    ctl = ring_control(streams)
    maps = ctl.filter(
        (pl.col("kind") == "ring_map") & (pl.col("side").cast(pl.String) == "back")
    ).select(
        *RING,
        pl.col("ns").alias("map_ns"),
        _counter("req_prod").alias("req_cons"),
        _counter("rsp_prod").alias("rsp_prod_pvt"),
    )
    sizes = nr_ents(streams.rings, streams.snapshots, options.default_nr_ents)
    rows = (
        _observed(streams, maps.filter(pl.col("req_cons").is_not_null()))
        .pipe(_asof, _front_restarts(ctl), "map_ns", "restart_ns")
        .join(sizes, on=RING, how="left", nulls_equal=True)
        .with_columns(pl.col("nr_ents").fill_null(options.default_nr_ents))
    )
    n = pl.col("nr_ents")
    # How far the live producers are ahead of the backend's counters.
    rsp_lag = u32_ahead("obs_rsp_prod", "rsp_prod_pvt")
    cons_lag = u32_ahead("obs_rsp_prod", "req_cons")
    unread = u32_ahead("obs_req_prod", "req_cons")
    behind = (rsp_lag.is_between(1, HALF - 1)) | (cons_lag.is_between(1, HALF - 1))
    implausible = unread.is_between(n + 1, HALF - 1)
    live = pl.col("restart_ns").is_null() | (
        pl.max_horizontal("obs_req_ns", "obs_rsp_ns") > pl.col("restart_ns")
    )
    # A frontend that restarted its ring unseen publishes next at the map's
    # counters, not after its old requests.
    fits_map = u32_ahead("next_req_idx", "req_cons") < n
    fits_old = u32_ahead("next_req_idx", "obs_req_prod") < n
    restarted_unseen = pl.col("next_req_idx").is_not_null() & fits_map & ~fits_old
    return (
        rows.filter(
            pl.col("obs_rsp_prod").is_not_null()
            & pl.col("obs_req_prod").is_not_null()
            & live
            & ~restarted_unseen
            & (behind | implausible)
        )
        .with_columns(
            pl.col("map_ns").alias("ns"),
            pl.lit("ring_map").alias("evidence_from"),
            rsp_lag.alias("rsp_lag"),
            unread.alias("unread"),
            pl.when(implausible)
            .then(pl.lit("blkback sees more requests than the ring holds and halts it"))
            .otherwise(pl.lit("it re-reads answered slots and answers them again"))
            .alias("effect"),
        )
        .select(
            *RING,
            "ns",
            *_MAP_EVIDENCE,
            "effect",
            "evidence_from",
        )
    )


def _silent_rebinds(streams: Streams) -> pl.LazyFrame:
    """From snapshots: a backend Connected again after Closed, under a frontend that stayed
    connected, that never answers while requests are pending.

    Only rings without a backend ``ring_map`` record (a capture alone): where
    the map was traced, :func:`_map_resets` judges its counters directly.
    """
    ctl = ring_control(streams)
    mapped = ctl.filter(
        (pl.col("kind") == "ring_map") & (pl.col("side").cast(pl.String) == "back")
    ).select(RING)
    back = (
        ctl.filter(
            (pl.col("kind") == "xenbus_state")
            & (pl.col("side").cast(pl.String) == "back")
            & pl.col("value").is_in([_CONNECTED, _CLOSED])
        )
        .join(mapped, on=RING, how="anti", nulls_equal=True)
        .select(*RING, "ns", "value")
        .sort("ns", maintain_order=True)
        .with_columns(
            pl.col("value").shift(1).over(RING).alias("prev"),
            pl.col("ns").shift(1).over(RING).alias("closed_ns"),
        )
    )
    binds = back.filter((pl.col("value") == _CONNECTED) & (pl.col("prev") == _CLOSED))
    closes = back.filter(pl.col("value") == _CLOSED).select(*RING, pl.col("ns").alias("end_ns"))
    binds = binds.sort("ns").join_asof(
        closes.sort("end_ns"),
        left_on="ns",
        right_on="end_ns",
        by=RING,
        strategy="forward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    # The frontend must not have restarted between the unbind and the bind.
    binds = binds.pipe(_asof, _front_restarts(ctl), "ns", "restart_ns").filter(
        pl.col("restart_ns").is_null() | (pl.col("restart_ns") < pl.col("closed_ns"))
    )
    snaps = streams.snapshots.lazy().select(
        *RING, pl.col("ns").alias("snap_ns"), "req_prod", "rsp_prod"
    )
    at_bind = binds.select(*RING, pl.col("ns").alias("bind_ns"), "closed_ns", "end_ns").pipe(
        _asof,
        snaps.select(
            *RING,
            "snap_ns",
            pl.col("req_prod").alias("bind_req_prod"),
            pl.col("rsp_prod").alias("bind_rsp_prod"),
        ),
        "bind_ns",
        "snap_ns",
    )
    in_window = (
        at_bind.drop("snap_ns")
        .join(snaps, on=RING, how="inner", nulls_equal=True)
        .filter(
            (pl.col("snap_ns") > pl.col("bind_ns"))
            & (pl.col("end_ns").is_null() | (pl.col("snap_ns") < pl.col("end_ns")))
        )
        .group_by([*RING, "bind_ns"])
        .agg(
            (pl.col("rsp_prod") != pl.col("bind_rsp_prod")).any().alias("progress"),
            pl.col("req_prod").sort_by("snap_ns").last().alias("_last_req_prod"),
        )
    )
    # No snapshot after the bind: the page did not change at all.
    window = (
        at_bind.filter(pl.col("bind_rsp_prod").is_not_null())
        .drop("snap_ns")
        .join(in_window, on=[*RING, "bind_ns"], how="left", nulls_equal=True)
        .with_columns(
            pl.col("progress").fill_null(False),
            pl.coalesce("_last_req_prod", "bind_req_prod").alias("last_req_prod"),
        )
    )
    # A capture records a snapshot only when the page changes: the silence
    # lasts until the next Closed, else until the capture's last record.
    last_seen = (
        pl.concat(
            [
                snaps.select(*RING, pl.col("snap_ns").alias("ns")),
                ctl.select(*RING, "ns"),
            ]
        )
        .group_by(RING)
        .agg(pl.col("ns").max().alias("last_seen_ns"))
    )
    pending = u32_ahead("last_req_prod", "bind_rsp_prod")
    return (
        window.join(last_seen, on=RING, how="left", nulls_equal=True)
        .with_columns(pl.coalesce("end_ns", "last_seen_ns").alias("until_ns"))
        .filter(
            ~pl.col("progress")
            & pending.is_between(1, HALF - 1)
            & ((pl.col("until_ns") - pl.col("bind_ns")) >= SILENT_AFTER_BIND_NS)
        )
        .with_columns(
            pl.col("bind_ns").alias("ns"),
            pl.col("until_ns").alias("ns_end"),
            pending.alias("pending"),
        )
        .select(
            *RING,
            "ns",
            "ns_end",
            "bind_ns",
            "closed_ns",
            "bind_req_prod",
            "bind_rsp_prod",
            "last_req_prod",
            "until_ns",
            "pending",
        )
    )


@rule(
    "ring-reattach-reset",
    family="lifecycle",
    severity="high",
    title="a backend re-attached to a live ring with reset counters",
    source="seed 002 (Paul Durrant 2019 'xen-blkback: support dynamic unbind/bind': "
    "BACK_RING_INIT on rebind, fixed by BACK_RING_ATTACH at the shared rsp_prod)",
    example="d1/51712/q0: backend mapped the ring at 36.667 ms with req_cons 0 / rsp_prod_pvt 0 "
    "while the live frontend was at req_prod 67 / rsp_prod 57 (seen 36.052 ms): blkback sees "
    "more requests than the ring holds and halts it",
)
def ring_reattach_reset(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A backend (re)maps a live ring with counters behind the ring's producers.

    ## What it means
    A backend that is unbound and bound again (driver reload, `unbind`/`bind`
    in sysfs) under a running frontend must continue the ring where it was:
    `req_cons = rsp_prod_pvt = rsp_prod` of the shared page. Counters behind
    the live producers make the backend either see more requests than the
    ring holds (`req_prod - req_cons > size`: blkback halts the ring and the
    guest's I/O hangs) or re-read slots already answered and answer them again
    (duplicated writes, responses the frontend does not expect).

    ## The real bug
    Seed 002 (Paul Durrant, 2019, "xen-blkback: support dynamic unbind/bind"):
    `xen_blkif_map` used `BACK_RING_INIT`, which zeroes the backend's private
    counters; the fix reads `rsp_prod` and `req_prod` from the page, attaches
    with `BACK_RING_ATTACH` at `rsp_prod` and fails the attach when
    `req_prod - rsp_prod` exceeds the ring size.

    ## Reading the evidence
    From a dump (`evidence_from` `ring_map`): `req_cons` / `rsp_prod_pvt` are the
    counters the backend's `blkif_ring_map` event recorded at `map_ns`;
    `obs_req_prod` / `obs_rsp_prod` the ring's producers last seen before it
    (a request or response at index i means the producer reached i + 1; a
    snapshot gives both), at `obs_req_ns` / `obs_rsp_ns`; `rsp_lag` how far the
    backend's `rsp_prod_pvt` is behind, `unread` how many requests it believes
    are waiting. A map whose counters are not behind (the attach fix, or a
    fresh ring) is not reported, nor one after the frontend restarted its ring
    (`resume`, a domain create or handoff, a frontend `ring_map` or xenbus
    Initialising..Initialised) with nothing seen since, nor one whose next
    request continues at the map's counters instead of the old sequence.

    From a capture alone (`evidence_from` `snapshots`, no `ring_map` record for
    the ring): the backend's xenbus state went Closed then Connected while the
    frontend stayed connected, requests were pending (`last_req_prod` ahead of
    `bind_rsp_prod`) and `rsp_prod` never moved from the bind (`bind_ns`) to
    `until_ns` (the next Closed, else the capture's last record: a capture
    writes a snapshot only when the page changes), at least 10 ms later.

    ## What the evidence cannot see
    A capture polls the shared page only: it cannot see the backend's private
    `req_cons` / `rsp_prod_pvt`, so it cannot tell `BACK_RING_INIT` from a
    backend that is merely stuck after the bind; the finding says "stopped
    answering", not "reset", and `stall` or `incomplete-at-disconnect` describe
    the same requests. Counters *ahead* of the producers are not reported
    (lost trace records hide the last responses, so the observed producers can
    lag the true ones).

    ## Known false positives
    A frontend that restarts its ring without any traced sign (no resume,
    xenbus change or frontend `ring_map`) and publishes nothing afterwards.
    From a capture: a re-bound backend behind a disk slower than 10 ms with
    the capture ending (or the next unbind coming) before its first answer.
    """
    mapped = emit(
        _map_resets(streams, options),
        "ring-reattach-reset",
        message=pl.format(
            "{}: backend mapped the ring at {} ms with req_cons {} / rsp_prod_pvt {} while the "
            "live frontend was at req_prod {} / rsp_prod {} (seen {} ms): {}",
            ring_label(),
            ms("map_ns"),
            "req_cons",
            "rsp_prod_pvt",
            "obs_req_prod",
            "obs_rsp_prod",
            ms(pl.max_horizontal("obs_req_ns", "obs_rsp_ns")),
            "effect",
        ),
        evidence=["evidence_from", *_MAP_EVIDENCE],
    )
    silent = emit(
        _silent_rebinds(streams).with_columns(pl.lit("snapshots").alias("evidence_from")),
        "ring-reattach-reset",
        message=pl.format(
            "{}: backend re-connected at {} ms (closed at {} ms) under a live frontend and "
            "answered nothing until {} ms with {} requests pending (req_prod {}, rsp_prod {}): "
            "it stopped answering after the bind (a capture cannot see its req_cons / "
            "rsp_prod_pvt)",
            ring_label(),
            ms("bind_ns"),
            ms("closed_ns"),
            ms("until_ns"),
            "pending",
            "last_req_prod",
            "bind_rsp_prod",
        ),
        evidence=[
            "evidence_from",
            "bind_ns",
            "closed_ns",
            "bind_req_prod",
            "bind_rsp_prod",
            "last_req_prod",
            "until_ns",
            "pending",
        ],
    )
    return pl.concat([mapped, silent])

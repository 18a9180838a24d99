"""Requests, responses and control from a capture agent's records: exact, no pairing by guess.

What each column rests on (docs/capture.md, docs/streams.md):

* a **response** is one ``make_response`` call: id, operation and status as the
  backend passed them, ``idx`` the slot its exit found them in, ``ns`` its exit;
* a **request** is the slot bytes of its ring index, read before the response
  of that index overwrote them, by the very call that wrote that response
  (slot ``k`` or ``k + 1`` of its entry reads, see capture/probes.py), or read
  at a disconnect when it was never answered; ``ns`` is the first time the
  backend saw ``req_prod`` pass it (a kick, a consume or any probe), which
  bounds the frontend's push from above; ``consumed_ns`` is its consume;
* an index whose request bytes were not read (a completion race three deep,
  an entry before the agent attached) has **no** request row: it is counted in
  the summary, never filled in.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import polars as pl

from blktrace_xen import schema
from blktrace_xen.decode.agentcap import AgentTables
from blktrace_xen.decode.ring_dtypes import blkif_dtypes, request_columns
from blktrace_xen.structs.agentcap import (
    SLOT_BYTES,
    UNDER_BIND,
    UNDER_UNBIND,
    UNKNOWN_U32,
    AgentWhat,
    Kind,
    RingReason,
    SlotWhy,
    XenbusEvent,
)

RING: Final = list(schema.RING_KEY)
_U32: Final = 1 << 32
_HALF: Final = 1 << 31
# enum blkif_protocol (Linux common.h) -> the ABI names of structs/blkif.py, for an x86_64 dom0
_ABI: Final = {1: "x86_64-abi", 2: "x86_32-abi", 3: "x86_64-abi"}
_ABI_NATIVE_ARM: Final = {1: "arm-abi", 2: "x86_32-abi", 3: "x86_64-abi"}


def _abi_map(description: str) -> dict[int, str]:
    return _ABI_NATIVE_ARM if "machine=aarch64" in description else _ABI


def _key_cols() -> list[pl.Expr]:
    return [
        pl.col("domid").cast(pl.UInt16),
        pl.col("vdev").cast(pl.UInt32),
        pl.col("queue").cast(pl.UInt16),
    ]


def tsc_of(clock: pl.DataFrame) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """The (mono ns, tsc) calibration points, None when the capture has none."""
    if clock.height == 0:
        return None
    mid = (
        (clock["mono_before_ns"].cast(pl.Float64) + clock["mono_after_ns"].cast(pl.Float64)) / 2
    ).to_numpy()
    tsc = clock["tsc"].cast(pl.Float64).to_numpy()
    order = np.argsort(mid, kind="stable")
    return mid[order], tsc[order]


def _tsc_expr(
    points: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None, ns: pl.Series
) -> pl.Series:
    """TSC at each ``ns`` by linear interpolation between calibration points (ends extrapolated)."""
    if points is None or len(ns) == 0:
        return pl.Series("tsc", [None] * len(ns), dtype=pl.UInt64)
    mono, tsc = points
    x = ns.cast(pl.Float64).to_numpy()
    if len(mono) < 2 or mono[-1] <= mono[0]:
        # one calibration point gives no rate: the TSC stays unknown
        return pl.Series("tsc", [None] * len(ns), dtype=pl.UInt64)
    slope = (tsc[-1] - tsc[0]) / (mono[-1] - mono[0])
    inner = np.interp(x, mono, tsc)
    lo = tsc[0] + (x - mono[0]) * slope
    hi = tsc[-1] + (x - mono[-1]) * slope
    out = np.where(x < mono[0], lo, np.where(x > mono[-1], hi, inner))
    return pl.Series("tsc", np.round(out)).cast(pl.UInt64, strict=False)


def _epochs(t: AgentTables, frame: pl.DataFrame, ns_col: str) -> pl.Series:
    """Per row of ``frame``: how many times its ring (kernel address) was reset before it.

    A disconnect or a connect restarts a backend ring's indices; within one epoch a
    ring's private producer only moves forward.
    """
    resets = pl.concat(
        [
            t.get(Kind.DISCONNECT).select("ring", "ns"),
            t.get(Kind.RING).filter(pl.col("reason") == RingReason.CONNECT).select("ring", "ns"),
        ]
    ).sort("ns")
    if resets.height == 0 or frame.height == 0:
        return pl.Series("epoch", [0] * frame.height, dtype=pl.UInt32)
    counted = resets.with_columns(pl.int_range(1, pl.len() + 1).over("ring").alias("epoch"))
    joined = (
        frame.select("ring", pl.col(ns_col).alias("ns"))
        .with_row_index("_row")
        .sort("ns")
        .join_asof(counted, on="ns", by="ring", strategy="backward", check_sortedness=False)
        .sort("_row")
    )
    return joined["epoch"].fill_null(0).cast(pl.UInt32).alias("epoch")


def _responses(t: AgentTables) -> pl.DataFrame:
    """One row per ``make_response`` call, with the index its response went to, or null.

    An exit record's finding is exact. Without one, the response went to ``k`` (the
    private producer the entry read) when no earlier call on the ring was still
    pending at its entry (every earlier entry's response already written: ``k``
    advanced once per entry) and no other call read the same ``k``; otherwise it
    raced for the ring lock and its index is one of a few, unknown.
    """
    entries = t.get(Kind.RSP_ENTRY)
    exits = t.get(Kind.RSP_EXIT)
    ent = entries.select(
        pl.col("ns").alias("entry_ns"),
        "tid",
        "ring",
        "domid",
        "vdev",
        "queue",
        "protocol",
        "nr_ents",
        pl.col("rsp_prod_pvt").alias("k"),
        "req_prod",
        "status",
        "operation",
        "id",
        "slot",
    )
    ent = ent.with_columns(_epochs(t, ent, "entry_ns"))
    ex = exits.select(
        pl.col("ns").alias("exit_ns"),
        pl.col("entry_ns").cast(pl.Int64),
        "tid",
        "ring",
        pl.col("idx").alias("found"),
    ).filter(pl.col("entry_ns") != 0)
    out = ent.join(ex, on=["entry_ns", "tid", "ring"], how="left").sort("entry_ns")
    per = ["ring", "epoch"]
    k0 = pl.col("k").first().over(per)
    out = out.with_columns(
        (pl.int_range(pl.len()).over(per) - ((pl.col("k") - k0) % _U32)).alias("pending"),
        pl.len().over([*per, "k"]).alias("racers"),
    )
    found = pl.col("found").is_not_null() & (pl.col("found") != UNKNOWN_U32)
    exact = (pl.col("pending") == 0) & (pl.col("racers") == 1)
    return out.with_columns(
        pl.when(found).then(pl.col("found")).when(exact).then(pl.col("k")).alias("idx"),
        pl.coalesce("exit_ns", "entry_ns").alias("rsp_ns"),
        (~found & ~exact).alias("raced"),
    )


def _triple(col: str) -> list[pl.Expr]:
    """(id, operation, status) of slot bytes read as a response (blkif_response layout)."""
    b = pl.col(col)
    return [
        b.bin.slice(0, 8).bin.reinterpret(dtype=pl.UInt64, endianness="little").alias("_rid"),
        b.bin.slice(8, 1).bin.reinterpret(dtype=pl.UInt8, endianness="little").alias("_rop"),
        b.bin.slice(10, 2).bin.reinterpret(dtype=pl.Int16, endianness="little").alias("_rst"),
    ]


def _request_rows(t: AgentTables, rsp: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """(ring, key, idx, bytes, protocol, nr_ents, answered_ns) of each request read.

    Every entry read slots ``k`` and ``k + 1`` before either response was written
    there (a response at an index is written only once the producer has reached it);
    slot ``k + 1`` holds its request only if the frontend had published it (the
    entry's ``req_prod`` past it), else it still holds an older ring's round.
    A read that shows a response of the same epoch (id, operation and status) was
    taken after that response landed and is set aside; the reads of an index must
    then agree. Returns the rows and the number of answered indices left without
    bytes (no read, or reads that disagree).
    """
    # the slot after k, read with it; two calls on one thread can share a clock tick
    # (a coarse dom0 clock), so the slot's own index names its call too
    nexts = (
        t.get(Kind.SLOT)
        .filter(pl.col("why") == SlotWhy.NEXT_AT_RESPONSE)
        .select(
            pl.col("entry_ns").cast(pl.Int64),
            "tid",
            "ring",
            ((pl.col("idx") - 1) % _U32).alias("k"),
            pl.col("slot").alias("next"),
        )
    )
    base = rsp.join(nexts, on=["entry_ns", "tid", "ring", "k"], how="left")
    cols = ["ring", "epoch", "domid", "vdev", "queue", "protocol", "nr_ents", "entry_ns"]
    # a slot holds its request only once the frontend has published it (req_prod past it)
    published = ((pl.col("req_prod") - pl.col("idx")) % _U32).is_between(1, _HALF - 1)
    reads = pl.concat(
        [
            base.select(*cols, "req_prod", pl.col("k").alias("idx"), pl.col("slot").alias("bytes")),
            base.filter(pl.col("next").is_not_null()).select(
                *cols,
                "req_prod",
                ((pl.col("k") + 1) % _U32).alias("idx"),
                pl.col("next").alias("bytes"),
            ),
        ]
    ).filter(published)
    answers = rsp.select(
        "ring",
        "epoch",
        pl.col("id").cast(pl.UInt64).alias("_rid"),
        pl.col("operation").cast(pl.UInt8).alias("_rop"),
        pl.col("status").cast(pl.Int16).alias("_rst"),
    ).unique()
    reads = (
        reads.with_columns(_triple("bytes"))
        .join(answers, on=["ring", "epoch", "_rid", "_rop", "_rst"], how="anti")
        .drop("_rid", "_rop", "_rst")
        .sort("entry_ns")
    )
    # indices the responses of each epoch were written at: k0 .. k0 + n - 1
    span = rsp.group_by(["ring", "epoch"]).agg(pl.col("k").first().alias("k0"), pl.len().alias("n"))
    reads = reads.join(span, on=["ring", "epoch"]).filter(
        ((pl.col("idx") - pl.col("k0")) % _U32) < pl.col("n")
    )
    agree = reads.group_by(["ring", "epoch", "idx"]).agg(
        pl.col("bytes").n_unique().alias("_kinds"), pl.all().first()
    )
    got = agree.filter(pl.col("_kinds") == 1).select(
        "ring",
        "domid",
        "vdev",
        "queue",
        "protocol",
        "nr_ents",
        "idx",
        "bytes",
        pl.col("entry_ns").alias("answered_ns"),
        pl.lit(False).alias("unanswered"),
        pl.lit(None, pl.Boolean).alias("consumed_at_disconnect"),
    )
    missing = int(span["n"].sum() or 0) - got.height
    # never answered: read at a disconnect; consumed if below the backend's req_cons then
    disc = (
        t.get(Kind.DISCONNECT)
        .select(
            pl.col("ns").alias("entry_ns"),
            "ring",
            pl.col("rsp_prod_pvt").alias("d_pvt"),
            pl.col("req_cons").alias("d_cons"),
        )
        .unique(subset=["entry_ns", "ring"], keep="first")
    )
    dumps = (
        t.get(Kind.SLOT)
        .filter(pl.col("why") == SlotWhy.AT_DISCONNECT)
        .with_columns(pl.col("entry_ns").cast(pl.Int64))
        .join(disc, on=["entry_ns", "ring"], how="left")
        .select(
            "ring",
            "domid",
            "vdev",
            "queue",
            "protocol",
            "nr_ents",
            "idx",
            pl.col("slot").alias("bytes"),
            pl.lit(None, pl.Int64).alias("answered_ns"),
            pl.lit(True).alias("unanswered"),
            (
                ((pl.col("idx") - pl.col("d_pvt")) % _U32)
                < ((pl.col("d_cons") - pl.col("d_pvt")) % _U32)
            ).alias("consumed_at_disconnect"),
        )
        .unique(subset=["ring", "idx"], keep="first", maintain_order=True)
    )
    # a dumped request that some instance answered later (a rebind re-reads the live
    # ring) is that answered request, not a second one
    dumps = dumps.join(
        got.select(*RING, "idx", "bytes"), on=[*RING, "idx", "bytes"], how="anti"
    ).join(got.select("ring", "idx"), on=["ring", "idx"], how="anti")
    return pl.concat([got, dumps], how="vertical_relaxed"), missing


def _decode_requests(rows: pl.DataFrame, abis: dict[int, str]) -> pl.DataFrame:
    """Fields of the request bytes, by each row's protocol."""
    out = []
    for proto, part in rows.group_by("protocol", maintain_order=True):
        abi = abis.get(int(str(proto[0])), "x86_64-abi")
        dts = blkif_dtypes(abi)
        raw = np.frombuffer(b"".join(part["bytes"].to_list()), np.uint8).reshape(-1, SLOT_BYTES)
        raw = np.ascontiguousarray(raw[:, : dts.entry_size])
        c = request_columns(raw, dts)

        def null(v: np.ndarray[Any, Any], ok: np.ndarray[Any, Any], dt: Any) -> pl.Series:
            return pl.Series(v).cast(dt).set(pl.Series(~ok), None)

        out.append(
            part.with_columns(
                pl.Series("id", c.ids).cast(pl.UInt64),
                pl.Series("operation", c.ops).cast(pl.UInt8),
                null(c.indirect_op, c.is_indirect, pl.UInt8).alias("indirect_op"),
                null(c.nr_segments, c.nr_segments_valid, pl.UInt16).alias("nr_segments"),
                null(c.sector, c.sector_valid, pl.UInt64).alias("sector_number"),
                null(c.nr_sectors, c.nr_sectors_valid, pl.UInt64).alias("nr_sectors"),
            )
        )
    return pl.concat(out) if out else rows


def _observations(t: AgentTables) -> pl.DataFrame:
    """Every sight of a ring's shared req_prod: (ring address, epoch, ns, req_prod)."""
    frames = [
        t.get(k).select("ring", "ns", "req_prod")
        for k in (Kind.RSP_ENTRY, Kind.CONSUME, Kind.NOTIFY, Kind.RING, Kind.DISCONNECT)
    ]
    obs = pl.concat(frames).sort("ns", maintain_order=True)
    return obs.with_columns(_epochs(t, obs, "ns"))


def _first_seen(t: AgentTables, reqs: pl.DataFrame) -> pl.Series:
    """Per request: the first sight of req_prod past its index, on its ring in its epoch.

    Sights from several CPUs interleave and a read may be a little stale, so within an
    epoch req_prod is unwrapped by signed steps and its running maximum searched.
    """
    out = np.full(reqs.height, -1, np.int64)
    obs = _observations(t)
    if reqs.height and obs.height:
        when = reqs.select(pl.coalesce("answered_ns", "dump_ns").alias("w"), "ring")
        epochs = _epochs(t, when, "w")
        indexed = reqs.with_columns(epochs, when["w"]).with_row_index("_row")
        groups = dict(obs.partition_by(["ring", "epoch"], as_dict=True).items())
        for key, part in indexed.partition_by(["ring", "epoch"], as_dict=True).items():
            o = groups.get(key)
            if o is not None:
                _first_seen_ring(o, part, out)
    return pl.Series("ns", out).set(pl.Series(out < 0), None)


def _first_seen_ring(o: pl.DataFrame, part: pl.DataFrame, out: np.ndarray[Any, Any]) -> None:
    ons = o["ns"].to_numpy()
    p = o["req_prod"].to_numpy().astype(np.int64)
    step = (p[1:] - p[:-1] + _HALF) % _U32 - _HALF
    u = np.maximum.accumulate(p[0] + np.concatenate([[0], np.cumsum(step)]))
    idx = part["idx"].to_numpy().astype(np.int64)
    when = part["w"].to_numpy()
    rows = part["_row"].to_numpy()
    j = np.searchsorted(ons, when, side="right").clip(1, len(ons)) - 1
    ref = u[j]
    # the unwrapped req_prod that first includes the request's index
    target = ref - ((ref % _U32 - idx) % _U32) + 1
    first = np.searchsorted(u, target, side="left")
    ok = first < len(ons)
    out[rows[ok]] = ons[first[ok]]


def _consumed(t: AgentTables, reqs: pl.DataFrame) -> pl.Series:
    """Per request: its consume, on its ring in its epoch (ring addresses are reused)."""
    cons = t.get(Kind.CONSUME).select(
        "ring", ((pl.col("req_cons") - 1) % _U32).alias("idx"), pl.col("ns").alias("consumed_ns")
    )
    cons = (
        cons.with_columns(_epochs(t, cons, "consumed_ns"))
        .group_by(["ring", "epoch", "idx"])
        .agg(pl.col("consumed_ns").min())
    )
    when = reqs.select("ring", "idx", pl.coalesce("answered_ns", "dump_ns").alias("w"))
    when = when.with_columns(_epochs(t, when, "w"))
    return when.join(cons, on=["ring", "epoch", "idx"], how="left")["consumed_ns"]


def _control(t: AgentTables, abis: dict[int, str]) -> pl.DataFrame:
    parts: list[pl.DataFrame] = []
    xb = t.get(Kind.XENBUS)
    if xb.height:
        ev = pl.col("event")
        # the core re-reads a state it already reported (probe, connect): keep changes only
        xb = (
            xb.with_columns(
                pl.when(ev == XenbusEvent.BACKEND_STATE)
                .then(pl.col("backend_state"))
                .otherwise(pl.col("frontend_state"))
                .alias("_state")
            )
            .with_columns(pl.col("_state").shift(1).over(["domid", "vdev", "event"]).alias("_prev"))
            .filter(
                ~ev.is_in([XenbusEvent.FRONTEND_CHANGED, XenbusEvent.BACKEND_STATE])
                | pl.col("_prev").is_null()
                | (pl.col("_prev") != pl.col("_state"))
            )
        )
        kind = (
            pl.when(ev.is_in([XenbusEvent.FRONTEND_CHANGED, XenbusEvent.BACKEND_STATE]))
            .then(pl.lit("xenbus_state"))
            .when((ev == XenbusEvent.REMOVE) & ((pl.col("flags") & UNDER_UNBIND) != 0))
            .then(pl.lit("unbind"))
            .when((ev == XenbusEvent.PROBE) & ((pl.col("flags") & UNDER_BIND) != 0))
            .then(pl.lit("bind"))
        )
        detail = (
            pl.when(ev == XenbusEvent.FRONTEND_CHANGED)
            .then(pl.format("frontend {} state read by the backend", "nodename"))
            .when(ev == XenbusEvent.BACKEND_STATE)
            .then(pl.format("backend {} switched state", "nodename"))
            .when(ev == XenbusEvent.REMOVE)
            .then(pl.format("xen_blkbk_remove of {} under a sysfs unbind", "nodename"))
            .otherwise(pl.format("xen_blkbk_probe of {} under a sysfs bind", "nodename"))
        )
        parts.append(
            xb.with_columns(kind.alias("kind"))
            .filter(pl.col("kind").is_not_null())
            .select(
                pl.col("domid").cast(pl.UInt16),
                pl.col("vdev").cast(pl.UInt32),
                pl.lit(None, pl.UInt16).alias("queue"),
                "ns",
                "kind",
                pl.when(ev == XenbusEvent.FRONTEND_CHANGED)
                .then(pl.lit("front"))
                .otherwise(pl.lit("back"))
                .alias("side"),
                pl.when(ev.is_in([XenbusEvent.FRONTEND_CHANGED, XenbusEvent.BACKEND_STATE]))
                .then(pl.col("_state").cast(pl.Int64))
                .alias("value"),
                detail.alias("detail"),
            )
        )
    rings = (
        t.get(Kind.RING)
        .filter((pl.col("reason") == RingReason.CONNECT) & (pl.col("sring") != 0))
        .unique(subset=["ring", "sring"], keep="first", maintain_order=True)
    )
    if rings.height:
        parts.append(
            rings.select(
                *_key_cols(),
                "ns",
                pl.lit("ring_map").alias("kind"),
                pl.lit("back").alias("side"),
                pl.col("nr_ring_pages").cast(pl.Int64).alias("value"),
                pl.format(
                    "ring_page_order={} protocol={} req_prod={} rsp_prod={} backend_domid=0 "
                    "live_req_prod={} live_rsp_prod={} nr_ents={}",
                    (pl.col("nr_ents") // 32).log(2).cast(pl.Int64),
                    pl.col("protocol").replace_strict(
                        abis, default="unknown", return_dtype=pl.String
                    ),
                    "req_cons",
                    "rsp_prod_pvt",
                    "req_prod",
                    "rsp_prod",
                    "nr_ents",
                ).alias("detail"),
            )
        )
    disc = t.get(Kind.DISCONNECT)
    if disc.height:
        parts.append(
            disc.select(
                *_key_cols(),
                "ns",
                pl.lit("disconnect_request").alias("kind"),
                pl.lit("back").alias("side"),
                pl.col("inflight").alias("value"),
                pl.format(
                    "xen_blkif_disconnect: inflight={} rsp_prod_pvt={} req_cons={} "
                    "live_req_prod={} live_rsp_prod={}",
                    "inflight",
                    "rsp_prod_pvt",
                    "req_cons",
                    "req_prod",
                    "rsp_prod",
                ).alias("detail"),
            )
        )
    ret = t.get(Kind.DISCONNECT_RET)
    if ret.height:
        parts.append(
            ret.select(
                pl.col("domid").cast(pl.UInt16),
                pl.col("vdev").cast(pl.UInt32),
                pl.lit(None, pl.UInt16).alias("queue"),
                "ns",
                pl.lit("disconnect_done").alias("kind"),
                pl.lit("back").alias("side"),
                pl.col("ret").alias("value"),
                pl.format("xen_blkif_disconnect returned {}", "ret").alias("detail"),
            )
        )
    if not parts:
        return schema.empty("control")
    out = pl.concat(parts, how="vertical_relaxed").with_columns(pl.lit("agent").alias("source"))
    return out


def _rings(t: AgentTables, abis: dict[int, str]) -> pl.DataFrame:
    frames = [
        t.get(k).select(*RING, "ns", "protocol", "nr_ents")
        for k in (Kind.RING, Kind.RSP_ENTRY, Kind.CONSUME)
    ]
    all_ = pl.concat(frames).sort("ns").unique(subset=RING, keep="last", maintain_order=True)
    return schema.conform(
        all_.select(
            *_key_cols(),
            pl.col("protocol")
            .replace_strict(abis, default=None, return_dtype=pl.String)
            .alias("abi"),
            (pl.col("nr_ents") // 32).log(2).round().cast(pl.UInt8).alias("ring_page_order"),
            pl.col("nr_ents").cast(pl.UInt16),
            pl.lit(0, pl.UInt16).alias("backend_domid"),
        ),
        "rings",
    )


def agent_parts(
    t: AgentTables, description: str = ""
) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """Pre-assembly frames (requests, responses, control, rings) and the capture's own summary."""
    abis = _abi_map(description)
    points = tsc_of(t.get(Kind.CLOCK))
    rsp = _responses(t)
    responses = rsp.select(
        *_key_cols(),
        pl.lit(0, pl.UInt32).alias("session"),
        pl.col("rsp_ns").alias("ns"),
        pl.lit(None, pl.Int64).alias("consumed_ns"),
        pl.col("idx").cast(pl.UInt32),
        pl.col("id").cast(pl.UInt64),
        pl.col("operation").cast(pl.UInt8),
        pl.col("status").cast(pl.Int16),
        pl.lit(None, pl.Boolean).alias("pad_nonzero"),
        pl.lit("agent").alias("source"),
    )
    responses = responses.with_columns(_tsc_expr(points, responses["ns"]))
    rows, missing = _request_rows(t, rsp)
    disc_ns = (
        t.get(Kind.SLOT)
        .filter(pl.col("why") == SlotWhy.AT_DISCONNECT)
        .select("ring", "idx", pl.col("entry_ns").cast(pl.Int64).alias("dump_ns"))
        .unique(subset=["ring", "idx"], keep="first")
    )
    rows = rows.join(disc_ns, on=["ring", "idx"], how="left")
    rows = _decode_requests(rows, abis) if rows.height else rows
    requests = pl.DataFrame()
    if rows.height:
        rows = rows.with_columns(
            _first_seen(t, rows).alias("ns"),
            _consumed(t, rows).alias("consumed_ns"),
        )
        # a consume is a sight too (and clocks can tie): the first of the two
        rows = rows.with_columns(pl.min_horizontal("ns", "consumed_ns").alias("ns"))
        rows = rows.with_columns(
            pl.col("ns")
            .fill_null(pl.col("consumed_ns"))
            .fill_null(pl.col("answered_ns"))
            .fill_null(pl.col("dump_ns"))
        )
        requests = rows.select(
            *_key_cols(),
            pl.lit(0, pl.UInt32).alias("session"),
            "ns",
            "consumed_ns",
            pl.col("idx").cast(pl.UInt32),
            "id",
            "operation",
            "indirect_op",
            "nr_segments",
            "sector_number",
            "nr_sectors",
            pl.lit("full").alias("seen"),
            pl.lit("agent").alias("source"),
        ).sort(["ns", "idx"])  # requests first seen together: in ring order
        requests = requests.with_columns(_tsc_expr(points, requests["ns"]))
    else:
        requests = schema.empty("requests")
    control = _control(t, abis)
    if control.height:
        control = control.with_columns(_tsc_expr(points, control["ns"])).sort("ns")
    summary = _summary(t, rsp, rows, missing, points is not None)
    return {
        "requests": schema.conform(requests, "requests"),
        "responses": schema.conform(responses, "responses"),
        "control": schema.conform(control, "control"),
        "rings": _rings(t, abis),
    }, summary


def _responses_missed(t: AgentTables, rsp: pl.DataFrame) -> int:
    """Calls of make_response the probe did not see (a kprobe skips a call made while
    another BPF program runs on that CPU): every index from a ring epoch's first
    observed response up to the producer seen after its last one was written by one
    call, so the calls that left no record are the difference."""
    if rsp.height == 0:
        return 0
    per = rsp.group_by(["ring", "epoch"]).agg(
        pl.col("k").first().alias("k0"),
        pl.len().alias("n"),
        pl.col("entry_ns").max().alias("last_ns"),
        pl.col("k").last().alias("k_last"),
    )
    obs = pl.concat(
        [
            t.get(k).select("ring", "ns", "rsp_prod_pvt")
            for k in (Kind.CONSUME, Kind.NOTIFY, Kind.DISCONNECT)
        ]
    )
    obs = obs.with_columns(_epochs(t, obs, "ns"))
    after = (
        obs.join(per, on=["ring", "epoch"])
        .filter(pl.col("ns") > pl.col("last_ns"))
        .group_by(["ring", "epoch"])
        .agg(((pl.col("rsp_prod_pvt") - pl.col("k0")) % _U32).max().alias("span"))
    )
    joined = per.join(after, on=["ring", "epoch"], how="left").with_columns(
        pl.col("span").fill_null((pl.col("k_last") - pl.col("k0")) % _U32 + 1)
    )
    return int(joined.select((pl.col("span") - pl.col("n")).clip(0).sum()).item() or 0)


def _summary(
    t: AgentTables, rsp: pl.DataFrame, rows: pl.DataFrame, missing: int, has_clock: bool
) -> dict[str, Any]:
    notes = t.get(Kind.AGENT)
    texts = {
        AgentWhat(int(w)).name.lower(): s
        for w, s in zip(notes["what"].to_list(), notes["text"].to_list(), strict=True)
    }
    return {
        "records": t.count,
        "bad_records": t.bad,
        "lost_events": int(t.get(Kind.LOST)["count"].sum() or 0),
        "responses": rsp.height,
        "responses_without_exit": int(rsp.filter(pl.col("exit_ns").is_null()).height),
        "responses_index_unknown": int(rsp.filter(pl.col("idx").is_null()).height),
        "responses_raced": int(rsp.filter(pl.col("raced")).height),
        "responses_missed": _responses_missed(t, rsp),
        "requests": int(rows.height),
        "requests_unanswered": int(rows.filter(pl.col("unanswered")).height) if rows.height else 0,
        "request_bytes_missing": missing,
        "tsc_calibrated": has_clock,
        "agent": texts,
    }


__all__ = ["agent_parts", "tsc_of"]

"""Ring sessions: each ring's life split where the ring is (re)started.

A session is one span of a ring's life. It begins where the ring indices may
legitimately restart or be re-attached: a connect (xenbus Connected, or an
explicit ``connect``), a ring map, a driver bind, a resume, a domain create, or
an index discontinuity inferred from the ring itself. One connect emits several
of those in a row (domain create, map, Connected of each end), so consecutive
starts with no traffic (request, response, or entries a snapshot saw overwritten)
between them are one session, which begins at the first of them: when the ring
came up, which is the time a person debugging it looks for. Sessions are
numbered 1, 2, ... per ring; 0 = the ring was already live when the trace
began. Requests and responses get the number of the last session begun at or
before their time.

Disconnect, unbind, destroy and suspend do *not* start a session: a backend
that waits for in-flight I/O (the refcounted disconnect fix) still answers
after a disconnect request, and those responses must pair with their requests.
They are the *reasons* a request of the session may never be answered
(:func:`end_reasons`).

Two backend instances can share one ring key (a dump holding a migration's
source and target): the older instance's answers after the newer one's map
belong to the older session (:func:`drain_older_instance`).
"""

from __future__ import annotations

from typing import Final

import polars as pl

from blktrace_xen import schema

RING: Final = list(schema.RING_KEY)

START_KINDS: Final = (
    "connect",
    "ring_map",
    "bind",
    "resume",
    "domain_create",
    "index_discontinuity",
)
XENBUS_CONNECTED: Final = 4
XENBUS_CLOSING: Final = 5
XENBUS_CLOSED: Final = 6

# Control kinds that explain why a request was never answered -> io.outcome.
END_REASONS: Final[dict[str, str]] = {
    "disconnect_request": "disconnect",
    "disconnect_done": "disconnect",
    "ring_unmap": "disconnect",
    "unbind": "unbind",
    "domain_destroy": "destroy",
    "domain_shutdown": "destroy",
    "suspend": "suspend",
}

# When a session ends without any of those, the next session's start says why.
_START_AS_REASON: Final[dict[str, str]] = {
    "connect": "disconnect",
    "ring_map": "disconnect",
    "bind": "unbind",
    "resume": "suspend",
    "domain_create": "destroy",
    "index_discontinuity": "reset",
    "xenbus_state": "disconnect",  # a start by xenbus Connected ends like a connect
}


def _kind_str() -> pl.Expr:
    return pl.col("kind").cast(pl.String)


def ring_keys(*frames: pl.DataFrame) -> pl.DataFrame:
    """The distinct ring keys (all three parts non-null) of ``frames``."""
    parts = [f.select(RING) for f in frames if f.height]
    if not parts:
        return pl.DataFrame(schema={k: schema.CONTROL_SCHEMA[k] for k in RING})
    keys = pl.concat([p.cast({k: schema.CONTROL_SCHEMA[k] for k in RING}) for p in parts])
    return keys.drop_nulls().unique(maintain_order=True)


def per_ring(control: pl.DataFrame, rings: pl.DataFrame) -> pl.DataFrame:
    """Control rows expanded to every ring they concern.

    A row with a null ``vdev`` concerns every ring of its domain, a null
    ``queue`` every queue of its device. Output columns: ring key, ``ns``,
    ``kind`` (string), ``value``, ``_seq`` (the row's position in ``control``).
    """
    ctl = control.with_row_index("_seq").select(
        pl.col("domid"),
        pl.col("vdev").alias("_vdev"),
        pl.col("queue").alias("_queue"),
        "ns",
        _kind_str().alias("kind"),
        "value",
        pl.col("_seq").cast(pl.Int64),
        _attaches().alias("_attach"),
    )
    joined = rings.join(ctl, on="domid", how="inner")
    return joined.filter(
        (pl.col("_vdev").is_null() | (pl.col("_vdev") == pl.col("vdev")))
        & (pl.col("_queue").is_null() | (pl.col("_queue") == pl.col("queue")))
    ).select(*RING, "ns", "kind", "value", "_seq", "_attach")


def _attaches() -> pl.Expr:
    """A ``ring_map`` at non-zero indices: the backend re-attached to a live ring.

    ``blkif_ring_map`` records the backend's own counters; BACK_RING_ATTACH
    (seed 002's fix) takes the shared ring's, BACK_RING_INIT and a fresh ring
    start at 0. Null for other rows.
    """
    idx = pl.col("detail").str.extract_all(r"(?:req|rsp)_prod=(\d+)")
    nonzero = idx.list.eval(pl.element().str.extract(r"=(\d+)").cast(pl.Int64) != 0).list.any()
    return pl.when(_kind_str() == "ring_map").then(nonzero.fill_null(False)).otherwise(None)


def _is_start() -> pl.Expr:
    return pl.col("kind").is_in(list(START_KINDS)) | (
        (pl.col("kind") == "xenbus_state") & (pl.col("value") == XENBUS_CONNECTED)
    )


def _end_reason() -> pl.Expr:
    reason = pl.col("kind").replace_strict(END_REASONS, default=None, return_dtype=pl.String)
    closing = (pl.col("kind") == "xenbus_state") & pl.col("value").is_in(
        [XENBUS_CLOSING, XENBUS_CLOSED]
    )
    return pl.when(closing).then(pl.lit("disconnect")).otherwise(reason)


def start_events(control: pl.DataFrame, rings: pl.DataFrame) -> pl.DataFrame:
    """Every control row that starts a ring's life anew, in time order.

    Columns: ring key, ``start_ns``, ``start_kind``. Several of them in a row
    make one session (:func:`session_starts`).
    """
    rows = per_ring(control, rings).sort("ns", "_seq")
    # A re-attach continues the ring (the same requests are answered after it),
    # so the bind, map and Connected around it start no session: the attach
    # flag of the map holds for its whole instant and until the next map.
    at_ns = pl.col("_attach").fill_null(False).any().over([*RING, "ns"])
    last_map = pl.col("_attach").forward_fill().over(RING).fill_null(False)
    attached = at_ns | last_map
    suppressed = pl.col("kind").is_in(["bind", "ring_map", "connect", "xenbus_state"]) & attached
    starts = rows.filter(_is_start() & ~suppressed)
    return starts.select(*RING, pl.col("ns").alias("start_ns"), pl.col("kind").alias("start_kind"))


def _asof(
    left: pl.DataFrame,
    right: pl.DataFrame,
    left_on: str,
    right_on: str,
    *,
    forward: bool = False,
    strict: bool = False,
) -> pl.DataFrame:
    """``left`` with the columns of the same ring's ``right`` row nearest at or before each
    ``left_on`` time (``forward``: at or after; ``strict``: never at the same time).

    Callers sort both frames by their time column as a whole, hence within every
    ring too; Polars cannot check that with ``by``, so it is not asked to.
    """
    return left.join_asof(
        right,
        left_on=left_on,
        right_on=right_on,
        by=RING,
        strategy="forward" if forward else "backward",
        allow_exact_matches=not strict,
        check_sortedness=False,
    )


def _last_traffic_before(events: pl.DataFrame, frame: pl.DataFrame) -> pl.Series:
    """Per row of ``events`` (ring key, ``start_ns``; sorted by it): the time of
    ``frame``'s last row of the ring strictly before ``start_ns`` (null if none).

    ``frame`` must be sorted by ``ns`` (nulls anywhere are dropped).
    """
    right = frame.select(*RING, pl.col("ns").alias("_t")).filter(pl.col("_t").is_not_null())
    if right.height == 0:
        return pl.Series("_t", [None] * events.height, dtype=pl.Int64)
    right = right.cast({k: events.schema[k] for k in RING})
    return _asof(events, right, "start_ns", "_t", strict=True)["_t"]


def session_starts(
    control: pl.DataFrame,
    rings: pl.DataFrame,
    traffic: tuple[pl.DataFrame, ...] | None = None,
) -> pl.DataFrame:
    """One row per session: ring key, ``start_ns``, ``session`` (1, 2, ...), ``start_kind``,
    ``last_start_ns``.

    ``traffic``: frames with ring key and ``ns``, each sorted by ``ns``
    (requests, responses, gaps). A start with no row of them since the
    previous start joins that start's session; the session keeps the first
    start's time and kind, and ``last_start_ns`` is its last start's time.
    Without ``traffic`` every start is a session of its own (the raw starts,
    as :func:`unanswered_outcome` may use: it does not read the numbers).
    """
    events = start_events(control, rings)
    prev = pl.col("start_ns").shift(1).over(RING)
    if traffic is None or events.height == 0:
        new = pl.repeat(True, pl.len())
    else:
        last = [_last_traffic_before(events, f) for f in traffic if f.height]
        events = events.with_columns(
            pl.max_horizontal(last).alias("_t") if last else pl.lit(None, pl.Int64).alias("_t")
        )
        # Traffic at the previous start's instant belongs to its session.
        new = prev.is_null() | (pl.col("_t").is_not_null() & (pl.col("_t") >= prev))
    numbered = events.with_columns(
        new.cum_sum().over(RING).cast(pl.UInt32).alias("session"),
    )
    return (
        numbered.group_by([*RING, "session"], maintain_order=True)
        .agg(
            pl.col("start_ns").first(),
            pl.col("start_kind").first(),
            pl.col("start_ns").last().alias("last_start_ns"),
        )
        .select(*RING, "start_ns", "session", "start_kind", "last_start_ns")
    )


def assign_sessions(frame: pl.DataFrame, starts: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with ``session`` set from ``starts`` (a start at the same ns counts as before).

    Row order is kept. Rows with a null ``ns`` keep session 0.
    """
    if frame.height == 0:
        return frame
    cols = frame.columns
    tagged = frame.with_row_index("_row").with_columns(pl.col("ns").fill_null(pl.lit(-(2**62))))
    if starts.height == 0:
        return frame.with_columns(pl.lit(0, pl.UInt32).alias("session")).select(cols)
    right = starts.select(*RING, "start_ns", pl.col("session").alias("_session")).sort("start_ns")
    out = (
        tagged.drop("session")
        .sort("ns", maintain_order=True)
        .pipe(_asof, right, "ns", "start_ns")
        .sort("_row")
    )
    return (
        out.with_columns(
            pl.col("_session").fill_null(0).cast(pl.UInt32).alias("session"),
        )
        .with_columns(frame["ns"].alias("ns"))
        .select(cols)
    )


def _instance_overlaps(control: pl.DataFrame, starts: pl.DataFrame) -> pl.DataFrame:
    """When a ring's older backend instance may still answer inside a later session.

    A backend ``ring_map`` while the ring is still mapped is a second instance
    on one ring key (a migration's target in a dump holding both hosts): the
    older instance keeps answering until its ``ring_unmap``. A map at the very
    instant of the older instance's unmap (the target started when the source
    let go) gives a window of that instant, since records at one ns are
    numbered into the session starting then. Columns: ring key, ``begin_ns``,
    ``until_ns``, ``old_session`` (the session in effect before the map) and
    ``nr_ents`` (from the map's ring page order; 32 entries per page).
    """
    kind = _kind_str()
    rows = (
        control.with_row_index("_seq")
        .filter(
            kind.is_in(["ring_map", "ring_unmap"])
            & (pl.col("side").cast(pl.String) == "back")
            & pl.col("vdev").is_not_null()
            & pl.col("queue").is_not_null()
        )
        .sort("ns", "_seq")
        .select(
            *RING,
            "ns",
            (kind == "ring_map").alias("is_map"),
            pl.col("detail").str.extract(r"ring_page_order=(\d+)").cast(pl.Int64).alias("_order"),
        )
    )
    if rows.height == 0 or starts.height == 0:
        return pl.DataFrame()
    delta = pl.when(pl.col("is_map")).then(1).otherwise(-1)
    unmap_ns = pl.when(~pl.col("is_map")).then(pl.col("ns"))
    windows = (
        rows.with_columns(
            delta.cum_sum().shift(1).over(RING).fill_null(0).alias("_open"),
            unmap_ns.forward_fill().shift(1).over(RING).alias("_last_unmap"),
            unmap_ns.backward_fill().shift(-1).over(RING).alias("_next_unmap"),
        )
        .filter(pl.col("is_map"))
        .with_columns(
            pl.when(pl.col("_open") >= 1)
            .then(pl.col("_next_unmap"))
            .when(pl.col("_last_unmap") == pl.col("ns"))
            .then(pl.col("ns"))
            .alias("until_ns"),
            (32 * 2 ** pl.col("_order").fill_null(0)).alias("nr_ents"),
        )
        .filter(pl.col("until_ns").is_not_null())
        .select(*RING, pl.col("ns").alias("begin_ns"), "until_ns", "nr_ents")
        .sort("begin_ns")
    )
    before = starts.select(*RING, "start_ns", "session", "last_start_ns").sort("start_ns")
    # A map inside a session's run of starts (the domain create, bind, ... of
    # the new instance came just before it) is that session's own start: the
    # older instance's session is the one before.
    in_run = pl.col("begin_ns") <= pl.col("last_start_ns")
    return (
        _asof(windows, before, "begin_ns", "start_ns", strict=True)
        .with_columns(
            pl.when(in_run)
            .then(pl.col("session") - 1)
            .otherwise(pl.col("session"))
            .fill_null(0)
            .cast(pl.UInt32)
            .alias("old_session")
        )
        .drop("start_ns", "session", "last_start_ns")
    )


def drain_older_instance(
    responses: pl.DataFrame, control: pl.DataFrame, starts: pl.DataFrame
) -> pl.DataFrame:
    """``responses`` (sessions assigned) with the older backend instance's late answers moved
    back into its session.

    Inside a window of :func:`_instance_overlaps`, a response numbered into a
    later session whose ring index continues the older session's responses
    (one to ``nr_ents`` past its last response before the window) is that
    instance's answer to its own request: the later instance's ring starts its
    own indices. Row order is kept.
    """
    if responses.height == 0:
        return responses
    windows = _instance_overlaps(control, starts)
    if windows.height == 0:
        return responses
    tagged = responses.with_row_index("_row")
    last = (
        tagged.join(windows, on=RING, how="inner")
        .filter(
            (pl.col("ns") < pl.col("begin_ns"))
            & (pl.col("session") == pl.col("old_session"))
            & pl.col("idx").is_not_null()
        )
        .sort("ns", "_row")
        .group_by([*RING, "begin_ns"])
        .agg(pl.col("idx").last().cast(pl.Int64).alias("_last_idx"))
    )
    ahead = (pl.col("idx").cast(pl.Int64) - pl.col("_last_idx")) & 0xFFFFFFFF
    moved = (
        tagged.join(windows.join(last, on=[*RING, "begin_ns"]), on=RING, how="inner")
        .filter(
            pl.col("ns").is_between(pl.col("begin_ns"), pl.col("until_ns"))
            & (pl.col("session") > pl.col("old_session"))
            & ahead.is_between(1, pl.col("nr_ents"))
        )
        .group_by("_row")
        .agg(pl.col("old_session").min())
    )
    if moved.height == 0:
        return responses
    return (
        tagged.join(moved, on="_row", how="left")
        .sort("_row")
        .with_columns(pl.coalesce("old_session", "session").cast(pl.UInt32).alias("session"))
        .select(responses.columns)
    )


def end_reasons(control: pl.DataFrame, rings: pl.DataFrame) -> pl.DataFrame:
    """Every control row that can explain an unanswered request: ring key, ``ns``, ``reason``."""
    rows = per_ring(control, rings).with_columns(_end_reason().alias("reason"))
    return rows.filter(pl.col("reason").is_not_null()).select(*RING, "ns", "reason", "_seq")


def unanswered_outcome(
    pending: pl.DataFrame, control: pl.DataFrame, starts: pl.DataFrame
) -> pl.Series:
    """Why each request of ``pending`` (ring key, session, ns) was never answered.

    The first disconnect / unbind / destroy / suspend of the ring at or after
    the request, within its session; else, if a later session started, the
    reason that start implies; else ``trace_end``. The later session is the
    first start after the request (a start at its instant is its own), so
    ``starts`` may be the raw starts or the sessions: the answer is the same.
    """
    if pending.height == 0:
        return pl.Series("outcome", [], dtype=pl.String)
    rings = pending.select(RING).unique()
    reasons = (
        end_reasons(control, rings)
        .sort("ns", "_seq")
        .select(*RING, pl.col("ns").alias("end_ns"), "reason")
    )
    nxt = (
        starts.filter(pl.col("start_ns").is_not_null())
        .select(
            *RING,
            pl.col("start_ns").alias("next_start_ns"),
            pl.col("start_kind")
            .replace_strict(_START_AS_REASON, return_dtype=pl.String)
            .alias("next_reason"),
        )
        .sort("next_start_ns")
        .cast({k: pending.schema[k] for k in RING})
    )
    work = (
        pending.select(*RING, "ns")
        .with_row_index("_row")
        .with_columns(pl.col("ns").fill_null(pl.lit(-(2**62))))
        .sort("ns", maintain_order=True)
        .pipe(_asof, nxt, "ns", "next_start_ns", forward=True, strict=True)
    )
    if reasons.height:
        work = _asof(work, reasons, "ns", "end_ns", forward=True)
    else:
        work = work.with_columns(
            pl.lit(None, pl.Int64).alias("end_ns"), pl.lit(None, pl.String).alias("reason")
        )
    in_session = pl.col("end_ns").is_not_null() & (
        pl.col("next_start_ns").is_null() | (pl.col("end_ns") <= pl.col("next_start_ns"))
    )
    return (
        work.sort("_row")
        .select(
            pl.when(in_session)
            .then(pl.col("reason"))
            .when(pl.col("next_reason").is_not_null())
            .then(pl.col("next_reason"))
            .otherwise(pl.lit("trace_end"))
            .alias("outcome")
        )
        .to_series()
    )


def index_discontinuities(requests: pl.DataFrame) -> pl.DataFrame:
    """Control rows (kind ``index_discontinuity``) where a ring's request index moved backwards.

    Consecutive requests of a ring (in time order) normally have consecutive
    indices; a step that is negative modulo 2**32 means the ring was
    re-initialised under the observer. A forward jump is not a discontinuity
    (instrumentation may be sampled, captures may miss entries: see ``gaps``).
    """
    req = requests.filter(pl.col("idx").is_not_null()).select(*RING, "ns", "tsc", "idx", "source")
    step = (pl.col("idx").cast(pl.Int64) - pl.col("idx").shift(1).over(RING).cast(pl.Int64)) % (
        1 << 32
    )
    jumps = req.with_columns(step.alias("_step")).filter(pl.col("_step") >= (1 << 31))
    out = jumps.select(
        *RING,
        "ns",
        "tsc",
        pl.lit("index_discontinuity").alias("kind"),
        pl.lit("unknown").alias("side"),
        pl.col("idx").cast(pl.Int64).alias("value"),
        pl.format("request idx moved back by {}", (1 << 32) - pl.col("_step")).alias("detail"),
        "source",
    )
    return schema.conform(out, "control")


__all__ = [
    "END_REASONS",
    "START_KINDS",
    "assign_sessions",
    "drain_older_instance",
    "end_reasons",
    "index_discontinuities",
    "per_ring",
    "ring_keys",
    "session_starts",
    "start_events",
    "unanswered_outcome",
]

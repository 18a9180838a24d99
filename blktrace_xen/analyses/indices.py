"""Ring-index rules: what the shared-page producers say about each side.

Sources: snapshots of the shared page (ring captures); for rings without
snapshots, the ring indices carried by request/response events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from blktrace_xen.analyses.batches import in_batch, ring_batches
from blktrace_xen.analyses.emit import (
    HALF,
    RING,
    emit,
    episodes,
    ms,
    nr_ents,
    ring_key,
    ring_label,
    u32_ahead,
)
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import rule
from blktrace_xen.analyses.rings import (
    Grouped,
    chunks,
    count_before,
    group_keys,
    usable,
)
from blktrace_xen.analyses.timeline import REQ, RSP, cached, events_by_ring, requests, responses
from blktrace_xen.streams import Streams


def _snapshots(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    snaps = streams.snapshots.lazy().sort("ns", maintain_order=True)
    return snaps.with_columns(
        pl.col("nr_ents").cast(pl.Int64).fill_null(options.default_nr_ents),
        u32_ahead("req_prod", "rsp_prod").alias("outstanding"),
    )


def _event_indices(
    streams: Streams, only: pl.Series | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Requests and responses of rings without snapshots, with the other side's last index.

    Requests get ``last_rsp_idx`` (the ring's last response strictly before:
    at equal ns a request counts first), responses ``last_req_idx`` (the
    last request at or before); both get ``prev_idx`` / ``prev_session`` /
    ``prev_ns`` of the ring's previous event of their kind. ``only`` (ring
    keys, see :func:`ring_key`) restricts both to those rings: every value is
    per ring, so a ring's rows are the same either way.

    Not the streams' pairing: this follows ring indices, not ids. Two as-of
    joins of the time-ordered frames, not a merged frame with windows.
    """

    def side(frame: pl.DataFrame) -> pl.DataFrame:
        prev = pl.struct(
            pl.col("idx").alias("prev_idx"),
            pl.col("session").alias("prev_session"),
            pl.col("ns").alias("prev_ns"),
        )
        return (
            _indexed(streams, frame, only)
            .select(*RING, ring_key().alias("ring_key"), "session", "ns", "idx")
            .with_columns(prev.shift(1).over("ring_key").alias("_prev"))
            .unnest("_prev")
            .collect()
            # A filtered frame comes in ~100 chunks: the as-of joins run ~6x slower on it.
            .rechunk()
        )

    req, rsp = requests(streams), responses(streams)
    if only is not None and not only.len():
        # No ring at fault (a healthy trace): the same empty frames without a scan.
        req, rsp = req.head(0), rsp.head(0)
    return _with_last(side(req), side(rsp))


def _indexed(streams: Streams, frame: pl.DataFrame, only: pl.Series | None) -> pl.LazyFrame:
    """The events of ``frame`` with an index, on rings without snapshots (and in ``only``)."""
    snapped = streams.snapshots.select(ring_key().alias("k")).unique()["k"]
    rows = frame.lazy().filter(pl.col("idx").is_not_null())
    if snapped.len():
        # A filter, not an anti-join: it keeps time order for the as-of joins.
        rows = rows.filter(~ring_key().is_in(snapped.implode()))
    if only is not None:
        rows = rows.filter(in_batch(only))
    return rows


def _with_last(req: pl.DataFrame, rsp: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Requests with ``last_rsp_idx``, responses with ``last_req_idx`` (see :func:`_event_indices`).

    Eager as-of joins: polars 1.x runs the lazy one about ten times slower.
    Matched within a session: a migration's source and target (or any two
    backend instances) share a ring key but not their indices.
    """
    reqs = req.join_asof(
        rsp.select("ring_key", "session", "ns", pl.col("idx").alias("last_rsp_idx")),
        on="ns",
        by=["ring_key", "session"],
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    rsps = rsp.join_asof(
        req.select("ring_key", "session", "ns", pl.col("idx").alias("last_req_idx")),
        on="ns",
        by=["ring_key", "session"],
        strategy="backward",
        check_sortedness=False,
    )
    return reqs, rsps


# Two observations of a ring's producer in one session, the later one behind.
_BACK = pl.col("session").eq_missing(pl.col("prev_session")) & u32_ahead(
    "prev_idx", "idx"
).is_between(1, HALF - 1)


@dataclass(frozen=True, slots=True)
class _EventSummary:
    """What the three index rules need from every event, kept small: one row per ring key.

    ``max_outstanding``: the largest ``req_prod - rsp_prod`` below HALF seen
    by either side; ``overflow``: a response ahead of the requests;
    ``regressed``: an index that went back within a session. A rule that
    finds a ring at fault recomputes :func:`_event_indices` for those rings
    only, so a healthy trace never holds the wide per-event frames.
    """

    rings: pl.DataFrame

    def at_fault(self, flag: pl.Expr) -> pl.Series:
        return self.rings.filter(flag)["ring_key"]


def _event_summary(streams: Streams) -> _EventSummary:
    """:class:`_EventSummary` of ``streams``, computed once from narrow frames."""

    def side(frame: pl.DataFrame, only: pl.Series | None) -> pl.DataFrame:
        prev_idx = pl.col("idx").shift(1).over("ring_key")
        same = pl.col("session").eq_missing(pl.col("session").shift(1).over("ring_key"))
        return (
            _indexed(streams, frame, only)
            .with_columns(ring_key().alias("ring_key"))
            .select(
                "ring_key",
                "session",
                "ns",
                "idx",
                (same & u32_ahead(prev_idx, "idx").is_between(1, HALF - 1)).alias("back"),
            )
            .collect()
            .rechunk()
        )

    def batch(only: pl.Series | None) -> pl.DataFrame:
        reqs, rsps = _with_last(side(requests(streams), only), side(responses(streams), only))
        outstanding = pl.concat(
            [
                reqs.lazy().select(
                    "ring_key",
                    u32_ahead("idx", "last_rsp_idx").alias("out"),
                    pl.lit(False).alias("ovf"),
                    "back",
                ),
                rsps.lazy().select(
                    "ring_key",
                    u32_ahead("last_req_idx", "idx").alias("out"),
                    u32_ahead("idx", "last_req_idx").is_between(1, HALF - 1).alias("ovf"),
                    "back",
                ),
            ]
        )
        return (
            outstanding.group_by("ring_key")
            .agg(
                pl.col("out").filter(pl.col("out") < HALF).max().alias("max_outstanding"),
                pl.col("ovf").any().alias("overflow"),
                pl.col("back").any().alias("regressed"),
            )
            .collect()
        )

    def build() -> _EventSummary:
        req, rsp = requests(streams), responses(streams)
        if usable((req, rsp), [*RING, "ns"]):
            return _EventSummary(_summary_sorted(streams, req, rsp))
        batches = ring_batches((req, rsp))
        if batches is None:
            return _EventSummary(batch(None))
        return _EventSummary(pl.concat([batch(only) for only in batches]))

    return cached(streams, "event_summary", build)


M32 = 0xFFFFFFFF


def _ahead(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``u32_ahead(a, b).is_between(1, HALF - 1)`` of int64 arrays: ``a`` is ahead of ``b``."""
    d = (a - b) & M32
    ahead: np.ndarray = (d >= 1) & (d < HALF)
    return ahead


@dataclass(frozen=True, slots=True)
class _Side:
    """One kind's events of a few rings, grouped by ring in time order, as int64 arrays."""

    ring: np.ndarray
    session: np.ndarray  # -1 for a null session
    ns: np.ndarray
    idx: np.ndarray

    @classmethod
    def of(
        cls,
        g: Grouped,
        cols: tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None],
        rings: tuple[int, int],
        snapped: np.ndarray,
    ) -> _Side:
        """Rings ``rings[0]`` .. ``rings[1] - 1`` of ``g``, without rings in ``snapped``."""
        idx, has_idx, ns, session = cols
        rows = g.rows(*rings)
        order, ring = g.order[rows], g.codes[rows]
        # Most pieces hold no snapshotted ring and no null index: no row mask then.
        if has_idx is not None or snapped[rings[0] : rings[1]].any():
            keep = ~snapped[ring]
            if has_idx is not None:
                keep &= has_idx[order]
            if not keep.all():
                order, ring = order[keep], ring[keep]
        sess = np.full(len(order), -1, np.int64) if session is None else session[order]
        return cls(
            ring.astype(np.int64), sess.astype(np.int64), ns[order], idx[order].astype(np.int64)
        )

    def back(self) -> np.ndarray:
        """The rings of events behind the ring's previous one of this kind in the same session."""
        same = (self.ring[1:] == self.ring[:-1]) & (self.session[1:] == self.session[:-1])
        ring: np.ndarray = self.ring[1:][same & _ahead(self.idx[:-1], self.idx[1:])]
        return ring


def _columns(
    frame: pl.DataFrame,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """idx (nulls as 0), where idx is set (None: everywhere), ns, session.

    The session is None when every one is null, else -1 stands for a null.
    """
    idx = frame["idx"]
    has_idx = idx.is_not_null().to_numpy() if idx.null_count() else None
    session = frame["session"]
    if session.null_count() == session.len():
        sess = None
    elif session.null_count():
        sess = session.cast(pl.Int64).fill_null(-1).to_numpy()
    else:
        sess = session.to_numpy()
    return idx.fill_null(0).to_numpy(), has_idx, frame["ns"].to_numpy(), sess


def _summary_sorted(streams: Streams, req: pl.DataFrame, rsp: pl.DataFrame) -> pl.DataFrame:
    """:func:`_event_summary`'s rings from sorted NumPy arrays (no null ring key or ns).

    The same rows (an index, a ring without snapshots) and the same values:
    ``back`` compares each event with the ring's previous one of its kind,
    and the other side's last index comes from a search within the ring
    session (a null session matches nothing, as in the as-of join). A few
    rings at a time (see :func:`chunks`).
    """
    groups = events_by_ring(streams)
    q, s, uniq = groups.req, groups.rsp, groups.uniq
    del groups
    nrings = len(uniq)
    snapped = np.zeros(nrings, dtype=bool)
    if streams.snapshots.height and nrings:
        keys = streams.snapshots.select(ring_key().alias("k")).unique()["k"].drop_nulls().to_numpy()
        at = np.searchsorted(uniq, keys).clip(max=nrings - 1)
        snapped[at[uniq[at] == keys]] = True
    q_cols, s_cols = _columns(req), _columns(rsp)
    present = np.zeros(nrings, dtype=bool)
    regressed = np.zeros(nrings, dtype=bool)
    max_out = np.full(nrings, -1, dtype=np.int64)
    overflow = np.zeros(nrings, dtype=bool)
    for g0, g1 in chunks([q, s]):
        a = _Side.of(q, q_cols, (g0, g1), snapped)
        b = _Side.of(s, s_cols, (g0, g1), snapped)
        present[a.ring] = True
        present[b.ring] = True
        regressed[a.back()] = True
        regressed[b.back()] = True
        _last_indices(a, b, max_out, overflow)
    rings = np.flatnonzero(present)
    return pl.DataFrame(
        {
            "ring_key": pl.Series(uniq[rings], dtype=pl.UInt64),
            "max_outstanding": pl.Series(max_out[rings], dtype=pl.Int64).replace(-1, None),
            "overflow": overflow[rings],
            "regressed": regressed[rings],
        }
    )


def _one_session(req: _Side, rsp: _Side) -> int | None:
    """The session of every event of both sides, if they all have the same (not null) one."""
    sessions = [
        x
        for side in (req, rsp)
        if len(side.session)
        for x in (side.session.min(), side.session.max())
    ]
    if not sessions or min(sessions) != max(sessions) or sessions[0] < 0:
        return None
    return int(sessions[0])


def _in_rings(ring: np.ndarray, rings: np.ndarray) -> Grouped:
    """Rows already grouped by ``ring`` (ascending), as a :class:`Grouped` over ``rings``."""
    starts = np.append(np.searchsorted(ring, rings), len(ring)).astype(np.int64)
    codes = np.repeat(np.arange(len(rings)), np.diff(starts))
    return Grouped(np.arange(len(ring)), codes, starts, in_order=True)


def _last_indices(req: _Side, rsp: _Side, max_out: np.ndarray, overflow: np.ndarray) -> None:
    """Fold these rings' outstanding counts into ``max_out`` and their overflows into ``overflow``.

    The as-of joins of :func:`_with_last`, by ring session: a request's last
    response strictly before it (at equal ns a request counts first), a
    response's last request at or before it.
    """
    one = _one_session(req, rsp)
    if one is not None:
        # One session throughout (the common case): the ring sessions are the rings,
        # whose rows are grouped already.
        rings = np.unique(
            np.concatenate([req.ring[:1], req.ring[-1:], rsp.ring[:1], rsp.ring[-1:]])
        )
        rings = np.arange(rings[0], rings[-1] + 1)
        q, s = (_in_rings(side.ring, rings) for side in (req, rsp))
        pairs = (rings << 33) | one
        q_ns, q_idx, s_ns, s_idx = req.ns, req.idx, rsp.ns, rsp.idx
    else:
        q_ok, s_ok = req.session >= 0, rsp.session >= 0
        sides = [(req, q_ok.all(), q_ok), (rsp, s_ok.all(), s_ok)]
        cols = [
            (side.ring, side.session, side.ns, side.idx)
            if ok
            else (side.ring[keep], side.session[keep], side.ns[keep], side.idx[keep])
            for side, ok, keep in sides
        ]
        (q, s), pairs = group_keys([(ring << 33) | sess for ring, sess, _, _ in cols])
        (_, _, q_ns, q_idx), (_, _, s_ns, s_idx) = cols
    if not q.in_order:
        q_ns, q_idx = q_ns[q.order], q_idx[q.order]
    if not s.in_order:
        s_ns, s_idx = s_ns[s.order], s_idx[s.order]
    ring_of = pairs >> 33
    n = count_before(q, q_ns, s, s_ns, inclusive=False)
    hit = n > 0
    last = s_idx[(s.starts[q.codes] + n - 1)[hit]]
    out = (q_idx[hit] - last) & M32
    low = out < HALF
    np.maximum.at(max_out, ring_of[q.codes[hit][low]], out[low])
    n = count_before(s, s_ns, q, q_ns, inclusive=True)
    hit = n > 0
    last = q_idx[(q.starts[s.codes] + n - 1)[hit]]
    out = (last - s_idx[hit]) & M32
    low = out < HALF
    rings = ring_of[s.codes[hit]]
    np.maximum.at(max_out, rings[low], out[low])
    overflow[rings[_ahead(s_idx[hit], last)]] = True


def _with_sizes(rows: pl.LazyFrame, streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    sizes = nr_ents(streams.rings, streams.snapshots, options.default_nr_ents)
    return rows.join(
        sizes, on=RING, how="left", nulls_equal=True, maintain_order="left"
    ).with_columns(pl.col("nr_ents").fill_null(options.default_nr_ents))


def _smallest_ring(streams: Streams, options: AnalysisOptions) -> int:
    """A lower bound of every ring's size: rows within it need no size lookup."""
    sizes = nr_ents(streams.rings, streams.snapshots, options.default_nr_ents).collect()
    low = sizes["nr_ents"].min()
    return options.default_nr_ents if low is None else min(int(low), options.default_nr_ents)  # type: ignore[arg-type]


def _bad_in_time_order(rows: pl.LazyFrame) -> pl.LazyFrame:
    """The rows of the rings with a ``bad`` row, in time order (a request first at equal ns).

    Violations are rare: the episode windows then run over nothing instead of
    every event of a healthy trace.
    """
    rings = rows.filter(pl.col("bad")).select(RING).unique().collect()
    if "_order" not in rows.collect_schema().names():
        rows = rows.with_columns(pl.lit(0).alias("_order"))
    if rings.is_empty():
        return rows.head(0).drop("_order")
    return (
        rows.join(rings.lazy(), on=RING, how="semi", nulls_equal=True, maintain_order="left")
        .sort("_order", maintain_order=True)
        .drop("_order")
    )


def _flagged_only(rows: pl.LazyFrame) -> pl.LazyFrame:
    """``rows`` collected; empty unless some row is flagged ``bad``."""
    frame = rows.collect()
    return (frame if frame["bad"].any() else frame.head(0)).lazy()


def _summarise_episodes(flagged: pl.LazyFrame, value: str) -> pl.LazyFrame:
    return flagged.group_by([*RING, "run"]).agg(
        pl.col("session").first(),
        pl.col("ns").first(),
        pl.col("ns").last().alias("ns_end"),
        pl.len().alias("observations"),
        pl.col(value).max().alias(f"max_{value}"),
        pl.col("req_prod").first(),
        pl.col("rsp_prod").first(),
        pl.col("nr_ents").first(),
        pl.col("source").first(),
    )


@rule(
    "implausible-producer",
    family="indices",
    severity="high",
    title="req_prod - rsp_prod exceeds the ring size",
    source="Xen a63c57093b RING_REQUEST_PROD_OVERFLOW; blkback 'Frontend provided bogus ring "
    "requests ... Halting ring processing'; seed 002 (unbind/bind with BACK_RING_INIT)",
    example="d1/51712/q0: req_prod 1100 is 1100 entries ahead of rsp_prod 0 on a 32-entry ring "
    "(blkback halts this ring) from 1.250 ms, 14 observations",
)
def implausible_producer(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A ring whose published requests outnumber the free slots.

    ## What it means
    `req_prod - rsp_prod` (mod 2^32) is larger than the number of ring entries:
    the frontend claims more outstanding requests than the ring can hold, or the
    backend's response producer is far behind where it should be. Linux blkback
    checks exactly this (`RING_REQUEST_PROD_OVERFLOW`), prints "Frontend provided
    bogus ring requests" and stops processing the ring until it is disconnected:
    the guest's disk hangs.

    ## The real bug
    Xen a63c57093b (Jan Beulich, 2013) added the check; seed 002 (Paul Durrant,
    2019): a backend unbound and re-bound to a running guest initialised its
    private counters to zero (`BACK_RING_INIT`) although the shared producers were
    far along; the fix attaches at the current `rsp_prod` and rejects an
    implausible ring with -EIO.

    ## Reading the evidence
    `req_prod`, `rsp_prod` and `nr_ents` are from the first snapshot of the
    episode; `max_outstanding` is the worst distance seen; `observations` counts
    snapshots (or events) in the episode. Rings without snapshots are checked
    from the indices of request and response events (`source: events`).

    ## Known false positives
    A snapshot copied while a multi-page ring is being re-initialised can mix
    old and new header words; such an episode lasts one observation.
    """
    snaps = _snapshots(streams, options).with_columns(
        ((pl.col("outstanding") > pl.col("nr_ents")) & (pl.col("outstanding") < HALF)).alias("bad"),
        pl.lit(None, pl.UInt32).alias("session"),
        pl.lit("snapshots").alias("source"),
    )
    # No ring is smaller than ``low``: rows within it are fine on every ring,
    # and the events of only the rings that have other rows are looked at.
    low = _smallest_ring(streams, options)
    at_fault = _event_summary(streams).at_fault(pl.col("max_outstanding") > low)
    reqs, rsps = _event_indices(streams, at_fault)
    prods = {
        REQ: (pl.col("idx"), pl.col("last_rsp_idx")),
        RSP: (pl.col("last_req_idx"), pl.col("idx")),
    }
    ev = pl.concat(
        [
            frame.lazy()
            .filter(rsp_prod.is_not_null() & req_prod.is_not_null())
            .select(
                *RING,
                "session",
                "ns",
                (req_prod.cast(pl.Int64) + 1).alias("req_prod"),
                (rsp_prod.cast(pl.Int64) + 1).alias("rsp_prod"),
                (pl.col("ns") * 2 + kind).alias("_order"),
            )
            for kind, frame in ((REQ, reqs), (RSP, rsps))
            for req_prod, rsp_prod in [prods[kind]]
        ]
    ).with_columns(u32_ahead("req_prod", "rsp_prod").alias("outstanding"))
    ev = _with_sizes(
        _bad_in_time_order(
            ev.with_columns(
                ((pl.col("outstanding") > low) & (pl.col("outstanding") < HALF)).alias("bad")
            )
        ),
        streams,
        options,
    ).with_columns(
        ((pl.col("outstanding") > pl.col("nr_ents")) & (pl.col("outstanding") < HALF)).alias("bad"),
        pl.lit("events").alias("source"),
    )
    cols = [
        *RING,
        "session",
        "ns",
        "req_prod",
        "rsp_prod",
        "nr_ents",
        "outstanding",
        "bad",
        "source",
    ]
    rows = pl.concat(
        [
            snaps.select(cols).with_columns(pl.col("req_prod", "rsp_prod").cast(pl.Int64)),
            ev.select(cols).with_columns(pl.col("session").cast(pl.UInt32)),
        ]
    )
    found = _summarise_episodes(episodes(_flagged_only(rows), "bad", RING), "outstanding")
    return emit(
        found,
        "implausible-producer",
        message=pl.format(
            "{}: req_prod {} is {} entries ahead of rsp_prod {} on a {}-entry ring "
            "(blkback halts this ring) from {} ms, {} observations",
            ring_label(),
            "req_prod",
            "max_outstanding",
            "rsp_prod",
            "nr_ents",
            ms("ns"),
            "observations",
        ),
        evidence=["req_prod", "rsp_prod", "nr_ents", "max_outstanding", "observations", "source"],
    )


@rule(
    "producer-regression",
    family="indices",
    severity="high",
    title="a ring producer index moved backwards",
    source="seed 002 (BACK_RING_INIT on a live ring); Xen 613659da9b removal of the broken "
    "ring-attach macros",
    example="d1/51712/q0: rsp_prod moved backwards from 1024 to 0 (req_prod 1030 -> 1031) "
    "at 2.500 ms: a side re-initialised its ring state under a live peer",
)
def producer_regression(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A shared-ring producer (`req_prod` or `rsp_prod`) that went backwards.

    ## What it means
    Ring indices are free-running u32 counters that only ever grow (mod 2^32).
    One moving backwards means a side re-initialised its view of the ring while
    the other kept going: requests get re-consumed or answered twice, or the
    backend's indices look like an overflow to the frontend.

    ## The real bug
    Seed 002 (Linux xen-blkback, Paul Durrant 2019): after unbind/bind the
    backend used `BACK_RING_INIT`, restarting `rsp_prod` at 0 under a frontend
    whose `req_prod` was far along; fixed with `BACK_RING_ATTACH`.

    ## Reading the evidence
    `producer` names the index (`req` or `rsp`), `from` and `to` its values in
    the two observations, `req_from/req_to`, `rsp_from/rsp_to` both producers.
    A fresh ring (both producers reset to a plausible state, as after a
    reconnect with a new shared page) is not reported.

    ## Known false positives
    A ring page reused by a new frontend connection without an observed
    disconnect looks like a regression of both producers; it is only reported
    when the new state is itself implausible.
    """
    snaps = (
        _snapshots(streams, options)
        .with_columns(
            pl.col("req_prod").shift(1).over(RING).alias("req_from"),
            pl.col("rsp_prod").shift(1).over(RING).alias("rsp_from"),
            pl.col("ns").shift(1).over(RING).alias("prev_ns"),
        )
        .filter(pl.col("req_from").is_not_null())
    )
    req_back = u32_ahead("req_from", "req_prod").is_between(1, HALF - 1)
    rsp_back = u32_ahead("rsp_from", "rsp_prod").is_between(1, HALF - 1)
    fresh = req_back & rsp_back & (pl.col("outstanding") <= pl.col("nr_ents"))
    found = (
        snaps.with_columns(
            req_back.alias("req_back"), rsp_back.alias("rsp_back"), fresh.alias("fresh")
        )
        .filter((pl.col("req_back") | pl.col("rsp_back")) & ~pl.col("fresh"))
        .with_columns(
            pl.when(pl.col("req_back"))
            .then(pl.lit("req_prod"))
            .otherwise(pl.lit("rsp_prod"))
            .alias("producer"),
            pl.when(pl.col("req_back")).then("req_from").otherwise("rsp_from").alias("from"),
            pl.when(pl.col("req_back")).then("req_prod").otherwise("rsp_prod").alias("to"),
            pl.col("req_prod").alias("req_to"),
            pl.col("rsp_prod").alias("rsp_to"),
            pl.col("prev_ns").alias("ns"),
            pl.col("ns").alias("ns_end"),
        )
    )
    # Rings without snapshots: consecutive request (or response) indices in one session.
    ev_found = pl.concat(
        [
            frame.lazy()
            .filter(_BACK)
            .select(
                *RING,
                pl.col("prev_ns").alias("ns"),
                pl.col("ns").alias("ns_end"),
                pl.lit(producer).alias("producer"),
                pl.col("prev_idx").alias("from"),
                pl.col("idx").alias("to"),
            )
            for producer, frame in zip(
                ("req_prod", "rsp_prod"),
                _event_indices(streams, _event_summary(streams).at_fault(pl.col("regressed"))),
                strict=True,
            )
        ]
    ).sort("ns_end", maintain_order=True)
    cols = [*RING, "ns", "ns_end", "producer", "from", "to"]
    rows = pl.concat(
        [
            found.select(*cols, "req_from", "req_to", "rsp_from", "rsp_to").with_columns(
                pl.col("from", "to", "req_from", "req_to", "rsp_from", "rsp_to").cast(pl.Int64)
            ),
            ev_found.select(*cols).with_columns(pl.col("from", "to").cast(pl.Int64)),
        ],
        how="diagonal",
    )
    return emit(
        rows.with_columns(pl.col("to").cast(pl.UInt32).alias("idx")),
        "producer-regression",
        message=pl.format(
            "{}: {} moved backwards from {} to {} at {} ms: a side re-initialised its ring "
            "state under a live peer",
            ring_label(),
            "producer",
            "from",
            "to",
            ms("ns_end"),
        ),
        evidence=["producer", "from", "to", "req_from", "req_to", "rsp_from", "rsp_to"],
    )


@rule(
    "response-overflow",
    family="indices",
    severity="high",
    title="more responses produced than requests",
    source="Xen d1f6296053 RING_RESPONSE_PROD_OVERFLOW; blkfront 'illegal number of responses' "
    "(Juergen Gross 2021, 'xen/blkfront: don't trust the backend response data blindly')",
    example="d1/51712/q0: rsp_prod 40 is 8 entries ahead of req_prod 32 from 3.000 ms "
    "(blkfront disables the device), 1 observations",
)
def response_overflow(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """The backend's response producer is ahead of the requests.

    ## What it means
    `rsp_prod` is ahead of `req_prod` (mod 2^32): the backend claims to have
    answered requests that were never published. Linux blkfront since 2021
    checks `RING_RESPONSE_PROD_OVERFLOW`, logs "illegal number of responses" and
    disables the device until it is re-added.

    ## The real bug
    Juergen Gross's 2021 blkfront hardening series ("xen/blkfront: don't trust
    the backend response data blindly", b94e4b147fd1) and Xen d1f6296053
    (`RING_RESPONSE_PROD_OVERFLOW`): a buggy or malicious backend must not make
    the frontend consume garbage slots.

    ## Reading the evidence
    `req_prod`, `rsp_prod` at the first observation; `max_ahead` the worst
    excess; `source` is `snapshots` or `events` (response index beyond the last
    request index seen, for rings without snapshots).

    ## Known false positives
    For event sources, a request event lost from the trace makes a response
    look early; the finding's confidence is lowered when `lost` overlaps it.
    """
    snaps = _snapshots(streams, options).with_columns(
        u32_ahead("rsp_prod", "req_prod").alias("ahead"),
        pl.lit(None, pl.UInt32).alias("session"),
        pl.lit("snapshots").alias("source"),
    )
    ev = (
        _event_indices(streams, _event_summary(streams).at_fault(pl.col("overflow")))[1]
        .lazy()
        .filter(pl.col("last_req_idx").is_not_null())
        .select(
            *RING,
            "session",
            "ns",
            (pl.col("last_req_idx").cast(pl.Int64) + 1).alias("req_prod"),
            (pl.col("idx").cast(pl.Int64) + 1).alias("rsp_prod"),
        )
        .with_columns(u32_ahead("rsp_prod", "req_prod").alias("ahead"))
        .with_columns(pl.col("ahead").is_between(1, HALF - 1).alias("bad"))
    )
    ev = _with_sizes(_bad_in_time_order(ev), streams, options).with_columns(
        pl.lit("events").alias("source")
    )
    cols = [*RING, "session", "ns", "req_prod", "rsp_prod", "nr_ents", "ahead", "source"]
    rows = pl.concat(
        [
            snaps.select(cols).with_columns(pl.col("req_prod", "rsp_prod").cast(pl.Int64)),
            ev.select(cols).with_columns(pl.col("session").cast(pl.UInt32)),
        ]
    ).with_columns(pl.col("ahead").is_between(1, HALF - 1).alias("bad"))
    found = _summarise_episodes(episodes(_flagged_only(rows), "bad", RING), "ahead")
    return emit(
        found,
        "response-overflow",
        message=pl.format(
            "{}: rsp_prod {} is {} entries ahead of req_prod {} from {} ms "
            "(blkfront disables the device), {} observations",
            ring_label(),
            "rsp_prod",
            "max_ahead",
            "req_prod",
            ms("ns"),
            "observations",
        ),
        evidence=["req_prod", "rsp_prod", "nr_ents", "max_ahead", "observations", "source"],
    )

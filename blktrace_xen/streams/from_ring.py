"""Requests, responses and control from a ring capture (snapshot diffs + xenstore lines).

The snapshot diffs are the ring decoder's (:func:`blktrace_xen.decode.ring.derive_ring_streams`);
this module adds what the capture's xenstore interface shows (xenbus state of
either end, any other vbd key) and turns producer regressions into index
discontinuities, so sessions split where the ring was re-initialised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import polars as pl

from blktrace_xen import schema

if TYPE_CHECKING:
    from pathlib import Path

    from blktrace_xen.decode.ring import RingStreams
    from blktrace_xen.decode.ringcap import RingCapture

# /local/domain/<domid>/device/vbd/<vdev>/<key...>
_FRONT_RE: Final = r"^/local/domain/(\d+)/device/vbd/(\d+)(?:/(.*))?$"
# /local/domain/<backend>/backend/vbd/<domid>/<vdev>/<key...>
_BACK_RE: Final = r"^/local/domain/\d+/backend/vbd/(\d+)/(\d+)(?:/(.*))?$"
# multi-queue: queue-<n>/... names a queue
_QUEUE_RE: Final = r"^queue-(\d+)/"
RING: Final = list(schema.RING_KEY)


def control_from_xenstore(xenstore: pl.DataFrame) -> pl.DataFrame:
    """CONTROL_SCHEMA rows from xenstore writes (columns ns, tsc, path, value).

    ``.../state`` writes become ``xenbus_state`` rows with the state number in
    ``value``; every other write under a vbd becomes a ``xenstore`` row with
    ``detail = "path=value"``. Paths outside the vbd trees are ignored.
    """
    if xenstore.height == 0:
        return schema.empty("control")
    xs = xenstore.with_columns(
        pl.col("path").str.extract(_FRONT_RE, 1).alias("_fd"),
        pl.col("path").str.extract(_FRONT_RE, 2).alias("_fv"),
        pl.col("path").str.extract(_FRONT_RE, 3).alias("_fk"),
        pl.col("path").str.extract(_BACK_RE, 1).alias("_bd"),
        pl.col("path").str.extract(_BACK_RE, 2).alias("_bv"),
        pl.col("path").str.extract(_BACK_RE, 3).alias("_bk"),
    )
    front = pl.col("_fd").is_not_null()
    xs = xs.filter(front | pl.col("_bd").is_not_null()).with_columns(
        pl.when(front).then(pl.col("_fd")).otherwise(pl.col("_bd")).cast(pl.UInt16).alias("domid"),
        pl.when(front).then(pl.col("_fv")).otherwise(pl.col("_bv")).cast(pl.UInt32).alias("vdev"),
        pl.when(front).then(pl.col("_fk")).otherwise(pl.col("_bk")).fill_null("").alias("_key"),
        pl.when(front).then(pl.lit("front")).otherwise(pl.lit("back")).alias("side"),
    )
    is_state = pl.col("_key") == "state"
    value = pl.col("value").str.strip_chars().cast(pl.Int64, strict=False)
    out = xs.select(
        "domid",
        "vdev",
        pl.col("_key").str.extract(_QUEUE_RE, 1).cast(pl.UInt16).alias("queue"),
        "ns",
        "tsc",
        pl.when(is_state).then(pl.lit("xenbus_state")).otherwise(pl.lit("xenstore")).alias("kind"),
        "side",
        pl.when(is_state).then(value).alias("value"),
        pl.when(is_state).then(None).otherwise(pl.format("{}={}", "path", "value")).alias("detail"),
        pl.lit("ringcap").alias("source"),
    )
    return schema.conform(out, "control")


def control_from_anomalies(anomalies: pl.DataFrame) -> pl.DataFrame:
    """``index_discontinuity`` rows for producers the ring decoder saw moving backwards."""
    back = anomalies.filter(pl.col("kind") == "backwards")
    out = back.select(
        "domid",
        "vdev",
        "queue",
        "ns",
        pl.lit("index_discontinuity").alias("kind"),
        pl.lit("unknown").alias("side"),
        pl.col("new").cast(pl.Int64).alias("value"),
        pl.format("{}_prod moved back from {} to {}", "producer", "old", "new").alias("detail"),
        pl.lit("ringcap").alias("source"),
    )
    return schema.conform(out, "control")


def capture_parts(capture: RingCapture) -> dict[str, pl.DataFrame]:
    """Frames (pre-assembly) from a decoded ring capture, on the capture's own time base."""
    from blktrace_xen.decode.ring import derive_ring_streams

    derived = derive_ring_streams(capture)
    parts = _parts(capture.rings, capture.snapshots, capture.xenstore, derived)
    if capture.agent:
        parts = _with_agent(parts, capture.agent, capture.agent_description, capture.path)[0]
    return parts


def ringcap_parts(
    path: str | Path, *, snapshots_per_chunk: int = 16384
) -> tuple[dict[str, pl.DataFrame], list[str], dict[str, Any] | None]:
    """:func:`capture_parts` of the capture at ``path``, its warnings and the agent's summary.

    Snapshots are read chunk by chunk (memory bounded by one chunk of pages plus
    the derived tables); a capture agent's records (``blktrace-xen capture``)
    give exact requests, responses and control (streams/from_agent.py), which
    replace the snapshot-derived ones on the rings the agent saw. The summary is
    None for a capture without agent records.
    """
    from blktrace_xen.decode.ring import RingStreamsBuilder
    from blktrace_xen.decode.ringcap import iter_ringcap_chunks

    builder = RingStreamsBuilder()
    snapshots: dict[tuple[Any, ...], list[pl.DataFrame]] = {}  # per ring, by first snapshot
    xenstore: list[pl.DataFrame] = []
    warnings: list[str] = []
    agent: list[tuple[int, bytes]] = []
    description = ""
    rings = pl.DataFrame(schema=schema.RINGS_SCHEMA)
    for chunk in iter_ringcap_chunks(path, snapshots_per_chunk=snapshots_per_chunk):
        agent.extend(chunk.agent)
        description = chunk.agent_description or description
        builder.add(chunk)
        for key, df in chunk.snapshots.partition_by(
            ["domid", "vdev", "queue"], as_dict=True, maintain_order=True
        ).items():
            snapshots.setdefault(key, []).append(df)
        xenstore.append(chunk.xenstore)
        warnings.extend(chunk.warnings)
        rings = chunk.rings
        del chunk  # its file window goes before the next is mapped
    derived = builder.finish()
    # as read_ringcap lists them: each ring's snapshots together, rings by first snapshot
    frames = [df for dfs in snapshots.values() for df in dfs]
    snaps = pl.concat(frames) if frames else schema.empty("snapshots")
    parts = _parts(rings, snaps, pl.concat(xenstore), derived)
    summary: dict[str, Any] | None = None
    if agent:
        parts, summary, more = _with_agent(parts, agent, description, str(path))
        warnings += more
    return parts, warnings, summary


def _with_agent(
    parts: dict[str, pl.DataFrame], records: list[tuple[int, bytes]], description: str, path: str
) -> tuple[dict[str, pl.DataFrame], dict[str, Any], list[str]]:
    """Add the capture agent's exact streams; on its rings they replace what snapshots gave."""
    from blktrace_xen.decode.agentcap import agent_tables
    from blktrace_xen.streams.from_agent import agent_parts

    tables = agent_tables(records, path)
    exact, summary = agent_parts(tables, description)
    warnings = list(tables.warnings)
    if summary["lost_events"]:
        warnings.append(
            f"the capture agent lost {summary['lost_events']} events (bpftrace's buffer was "
            "full): requests and responses are missing from it"
        )
    if summary["responses_missed"]:
        warnings.append(
            f"the response probe missed {summary['responses_missed']} make_response calls "
            "(a kprobe is skipped while another BPF program runs on its CPU): those responses "
            "are unknown, their requests may read as never answered"
        )
    if summary["request_bytes_missing"]:
        warnings.append(
            f"{summary['request_bytes_missing']} answered requests have no bytes (a completion "
            "race deeper than two, or a response entered before the agent attached)"
        )
    agent_rings = exact["rings"].select(RING)
    out = dict(parts)
    for name in ("requests", "responses"):
        snap_rows = parts[name].join(agent_rings, on=RING, how="anti", nulls_equal=True)
        out[name] = pl.concat([snap_rows, exact[name]])
    out["control"] = pl.concat([parts["control"], exact["control"]]).sort("ns", maintain_order=True)
    out["rings"] = pl.concat([parts["rings"], exact["rings"]]).unique(
        subset=RING, keep="first", maintain_order=True
    )
    return out, summary, warnings


def _parts(
    rings: pl.DataFrame, snapshots: pl.DataFrame, xenstore: pl.DataFrame, derived: RingStreams
) -> dict[str, pl.DataFrame]:
    control = pl.concat(
        [control_from_xenstore(xenstore), control_from_anomalies(derived.anomalies)]
    ).sort("ns", maintain_order=True)
    return {
        "requests": derived.requests,
        "responses": derived.responses,
        "control": control,
        "snapshots": snapshots,
        "rings": rings,
        "gaps": derived.gaps,
        "mutations": derived.mutations,
    }


__all__ = ["capture_parts", "control_from_anomalies", "control_from_xenstore", "ringcap_parts"]

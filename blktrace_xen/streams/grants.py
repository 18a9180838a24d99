"""Grant accounting from TRC_MEM: per granting domain, maps minus unmaps over time.

Xen 4.17 traces every successful GNTTABOP_map_grant_ref (TRC_MEM_PAGE_GRANT_MAP,
word 0 = the *granting* domain, ``op->dom``) and unmap (TRC_MEM_PAGE_GRANT_UNMAP,
word 0 = ``map->domid``, the granting domain again), plus grant transfers (word
0 = the receiving domain). A backend serving a guest without persistent grants
maps and unmaps the guest's data pages for every request, so the guest's
balance returns to the number of grants in flight; with persistent grants the
backend keeps them mapped and the traffic nearly vanishes. The balance is
relative to the start of the trace (mappings made earlier are not seen).
"""

from __future__ import annotations

from typing import Final

import polars as pl

from blktrace_xen import schema

TRC_MEM_PAGE_GRANT_MAP: Final = 0x0010F001
TRC_MEM_PAGE_GRANT_UNMAP: Final = 0x0010F002
TRC_MEM_PAGE_GRANT_TRANSFER: Final = 0x0010F003

_OPS: Final = {
    TRC_MEM_PAGE_GRANT_MAP: "map",
    TRC_MEM_PAGE_GRANT_UNMAP: "unmap",
    TRC_MEM_PAGE_GRANT_TRANSFER: "transfer",
}


def grants_from_events(events: pl.DataFrame) -> pl.DataFrame:
    """The ``grants`` table (GRANTS_SCHEMA), in event order, with the running balance."""
    hits = events.filter(pl.col("event").is_in(list(_OPS)) & (pl.col("n_extra") >= 1))
    op = pl.col("event").replace_strict(_OPS, return_dtype=pl.String)
    step = pl.when(op == "map").then(1).when(op == "unmap").then(-1).otherwise(0).cast(pl.Int64)
    out = hits.select(
        "ns",
        "cpu",
        pl.col("d0").cast(pl.UInt16, strict=False).alias("granting_domid"),
        op.alias("op"),
        step.alias("_step"),
    ).with_columns(pl.col("_step").cum_sum().over("granting_domid").alias("balance"))
    return schema.conform(out, "grants")


def grant_summary(grants: pl.DataFrame, control: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per granting domain: maps, unmaps, transfers, final balance, and the balance at destroy.

    ``balance_at_destroy`` is the running balance at the domain's first
    ``domain_destroy`` control row (null if the trace did not see one): grants
    still mapped when the domain died are the leak the seed bugs describe.
    """
    summary = grants.group_by("granting_domid").agg(
        (pl.col("op") == "map").sum().cast(pl.Int64).alias("maps"),
        (pl.col("op") == "unmap").sum().cast(pl.Int64).alias("unmaps"),
        (pl.col("op") == "transfer").sum().cast(pl.Int64).alias("transfers"),
        pl.col("balance").last().alias("final_balance"),
        pl.col("balance").min().alias("min_balance"),
        pl.col("balance").max().alias("max_balance"),
    )
    destroy_col = pl.lit(None, pl.Int64).alias("balance_at_destroy")
    if control is None or control.height == 0 or grants.height == 0:
        return summary.with_columns(destroy_col).sort("granting_domid")
    destroys = (
        control.filter(pl.col("kind").cast(pl.String) == "domain_destroy")
        .group_by("domid")
        .agg(pl.col("ns").min().alias("destroy_ns"))
        .rename({"domid": "granting_domid"})
        .sort("destroy_ns")
    )
    at = destroys.join_asof(
        grants.select("granting_domid", "ns", "balance").sort("ns"),
        left_on="destroy_ns",
        right_on="ns",
        by="granting_domid",
        strategy="backward",
        # Sorted globally by ns, hence within every granting domain too.
        check_sortedness=False,
    ).select("granting_domid", pl.col("balance").fill_null(0).alias("balance_at_destroy"))
    return summary.join(at, on="granting_domid", how="left").sort("granting_domid")


__all__ = [
    "TRC_MEM_PAGE_GRANT_MAP",
    "TRC_MEM_PAGE_GRANT_TRANSFER",
    "TRC_MEM_PAGE_GRANT_UNMAP",
    "grant_summary",
    "grants_from_events",
]

"""Running the catalogue: select rules, collect findings, lower confidence, summarise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from blktrace_xen import schema
from blktrace_xen.analyses import confidence, timeline
from blktrace_xen.analyses.latency import BTT_BY, btt_table
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import RULES, severity_rank
from blktrace_xen.errors import ModelUsageError
from blktrace_xen.streams import Streams


def _check(rules: Sequence[str] | None, min_severity: str) -> list[str]:
    if min_severity not in schema.SEVERITIES:
        raise ModelUsageError(
            f"unknown severity {min_severity!r}; expected one of {', '.join(schema.SEVERITIES)}"
        )
    if rules is None:
        return list(RULES)
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise ModelUsageError(f"unknown rule(s) {', '.join(unknown)}; see docs/rules.md")
    return list(dict.fromkeys(rules))


def run_rules(
    streams: Streams,
    *,
    rules: Sequence[str] | None = None,
    min_severity: str = "info",
    options: AnalysisOptions | None = None,
) -> pl.DataFrame:
    """Run the selected rules (all by default) and return their findings.

    The frame has FINDINGS_SCHEMA, is sorted by ``ns``, then catalogue order,
    ring, session, id, index and message (a total order, so the output is the
    same on every run whatever order a rule's grouping produced), keeps only
    findings at or above ``min_severity``, and has the confidence of findings
    overlapping lost records or ring gaps lowered.
    Raises :class:`ModelUsageError` for an unknown rule id or severity.
    """
    selected = _check(rules, min_severity)
    opts = options or AnalysisOptions()
    # Each rule is collected on its own: one failing query then names its rule,
    # and polars 2.1 panicked on the concatenation of all the lazy plans.
    try:
        parts = [RULES[r].fn(streams, opts).lazy().collect() for r in selected]
    finally:
        # The frames the rules shared are not kept past the run (or past analyze's).
        timeline.done()
    found = pl.concat(parts, how="vertical") if parts else schema.empty("findings")
    rank = severity_rank(min_severity)
    found = found.filter(pl.col("severity").to_physical() >= rank)
    found = confidence.adjust(found, streams, opts)
    order = {rule: i for i, rule in enumerate(RULES)}
    keys = ["ns", "_rank", "domid", "vdev", "queue", "session", "id", "idx", "message"]
    return (
        found.with_columns(
            pl.col("rule").replace_strict(order, return_dtype=pl.UInt32).alias("_rank")
        )
        .sort(keys, nulls_last=True)
        .drop("_rank")
    )


def analyze(
    streams: Streams,
    *,
    rules: Sequence[str] | None = None,
    min_severity: str = "info",
    options: AnalysisOptions | None = None,
    by: Sequence[str] = BTT_BY,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(run_rules(...), btt_table(streams, by=by))``, equal to those two calls.

    What both derive from ``streams`` (the time-ordered frames, the requests
    and responses grouped by ring) is computed once, and dropped on return.
    """
    _check(rules, min_severity)
    with timeline.shared(streams):
        # btt first: its ring grouping then goes to the index summary (the third
        # rule) instead of being held through every rule until btt.
        table = btt_table(streams, by=by)
        findings = run_rules(streams, rules=rules, min_severity=min_severity, options=options)
    return findings, table


def summarize(findings: pl.DataFrame) -> dict[str, Any]:
    """Counts by severity and by rule, the highest severity, and the lowest confidence."""
    by_sev = {s: 0 for s in schema.SEVERITIES}
    for sev, n in findings.group_by("severity").len().iter_rows():
        by_sev[str(sev)] = int(n)
    by_rule = {str(r): int(n) for r, n in findings.group_by("rule").len().sort("rule").iter_rows()}
    worst = next((s for s in reversed(schema.SEVERITIES) if by_sev[s]), None)
    low_conf = findings.filter(pl.col("confidence") < 1.0).height
    return {
        "total": findings.height,
        "by_severity": by_sev,
        "by_rule": by_rule,
        "highest_severity": worst,
        "lowered_confidence": low_conf,
    }

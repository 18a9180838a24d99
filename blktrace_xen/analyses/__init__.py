"""Rule families over the stream frames: frames in, findings out.

Public API: :data:`RULES` (the catalogue), :func:`run_rules`,
:func:`btt_table`, :func:`summarize` and :class:`AnalysisOptions`.
"""

from blktrace_xen.analyses import indices, pairing  # noqa: F401  (registers the rules)
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import RULES, Rule

__all__ = ["RULES", "AnalysisOptions", "Rule"]

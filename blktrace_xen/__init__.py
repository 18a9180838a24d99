"""blktrace-xen: decode, analyse, report and replay Xen blkif ring traffic.

Data flows one way: bytes -> typed tables -> request/response streams ->
analyses -> report / replay. The library never imports the CLI.
"""

from __future__ import annotations

from blktrace_xen.errors import BlktraceXenError, DecodeError

__version__ = "0.1.0"

__all__ = ["BlktraceXenError", "DecodeError", "__version__"]

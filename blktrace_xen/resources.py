"""Where the shipped data lives: formats/ (catalogs, specs) and replays/.

In a wheel, formats/ is packaged as ``blktrace_xen/_formats``; in a source
checkout (editable install, tests) it is the top-level ``formats/`` folder.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def formats_dir() -> Path:
    """The folder holding the event catalogs and format specs."""
    packaged = _PKG / "_formats"
    if packaged.is_dir():
        return packaged
    return _PKG.parent / "formats"


def replays_dir() -> Path:
    """The replay corpus of a source checkout (not shipped in the wheel)."""
    return _PKG.parent / "replays"

"""Shared test fixtures: the real captures, and the rule that oracles never skip in CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REALXEN = SHARED / "realxen"


def require_tool(path: str) -> str:
    """Return the tool's path; skip locally when missing, fail in CI.

    CI sets BLKTRACE_XEN_REQUIRE_ORACLES=1 so that a check against Xen's
    headers, xenalyze or tshark can never silently turn into a skip there.
    """
    found = shutil.which(path) or (path if os.path.exists(path) else None)
    if found:
        return found
    if os.environ.get("BLKTRACE_XEN_REQUIRE_ORACLES"):
        pytest.fail(f"{path} is required in CI but is not installed")
    pytest.skip(f"{path} not installed")


@pytest.fixture(scope="session")
def realxen() -> Path:
    """The real Xen 4.17.7 captures (../shared/realxen)."""
    if not REALXEN.is_dir():
        if os.environ.get("BLKTRACE_XEN_REQUIRE_ORACLES"):
            pytest.fail(f"{REALXEN} missing in CI")
        pytest.skip("../shared/realxen not present")
    return REALXEN

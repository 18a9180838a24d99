"""The table schemas: conform/validate behave, and every column is documented."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from blktrace_xen import schema
from blktrace_xen.errors import SchemaError

DOC = Path(__file__).resolve().parents[1] / "docs" / "schemas.md"


def test_conform_fills_missing_columns_with_null() -> None:
    df = pl.DataFrame({"id": [1, 2], "domid": [3, 3], "junk": ["a", "b"]})
    out = schema.conform(df, "requests")
    schema.validate(out, "requests")
    assert out["id"].to_list() == [1, 2]
    assert out["sector_number"].null_count() == 2


def test_validate_lists_every_problem() -> None:
    df = pl.DataFrame({"id": pl.Series([1], dtype=pl.Int8), "extra": [0]})
    with pytest.raises(SchemaError) as err:
        schema.validate(df, "responses")
    text = str(err.value)
    assert "'id' is Int8" in text
    assert "'status' missing" in text
    assert "unexpected columns ['extra']" in text


@pytest.mark.parametrize("table", sorted(schema.TABLES))
def test_every_column_is_documented(table: str) -> None:
    text = DOC.read_text()
    section = re.search(rf"^## `{table}`\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, f"docs/schemas.md has no section for {table}"
    for column in schema.TABLES[table]:
        assert f"`{column}`" in section.group(1), f"{table}.{column} undocumented"

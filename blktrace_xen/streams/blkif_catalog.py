"""The blkif instrumentation events: which xentrace ids they use and where their fields sit.

The stream builder recognises blkif events by *name* (``blkif_req_push`` ...)
and reads their fields by name, so a user remaps an event or moves a field by
editing TOML (``formats/blkif.toml`` or a catalog passed with ``--catalog``),
never code. The file format is the one of ``formats/CATALOG.md``; only the
subset the blkif events need is interpreted here (word, bits, type).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl

from blktrace_xen.errors import CatalogError
from blktrace_xen.resources import formats_dir

# The names the stream builder understands; catalogs may define others, which
# are ignored here (they are still shown by the generic event decoder).
BLKIF_EVENT_NAMES: Final = (
    "blkif_req_push",
    "blkif_req_sector",
    "blkif_req_consume",
    "blkif_rsp_push",
    "blkif_rsp_consume",
    "blkif_xenbus_state",
    "blkif_ring_map",
    "blkif_ring_unmap",
    "blkif_ref_get",
    "blkif_ref_put",
    "blkif_suspend",
    "blkif_resume",
    "blkif_disconnect_req",
    "blkif_disconnect_done",
    "blkif_unbind",
    "blkif_bind",
)

_TYPES: Final[dict[str, tuple[int, pl.DataType]]] = {
    "u8": (8, pl.UInt8()),
    "u16": (16, pl.UInt16()),
    "u32": (32, pl.UInt32()),
    "u64": (64, pl.UInt64()),
    "i16": (16, pl.Int16()),
    "i32": (32, pl.Int32()),
    "hex32": (32, pl.UInt32()),
    "hex64": (64, pl.UInt64()),
    "bool": (1, pl.Boolean()),
}
_DEFAULT_MASK: Final = 0x0FFFFFFF
MAX_WORDS: Final = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldSpec:
    """One typed field of an event payload: ``word`` (and ``word + 1`` for 64-bit types)."""

    name: str
    word: int
    lo: int
    hi: int
    type: str

    @property
    def words(self) -> int:
        """Payload words the field needs (2 for u64 / hex64)."""
        return 2 if _TYPES[self.type][0] == 64 else 1


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSpec:
    """A catalog event: ``(event & mask) == id`` selects its records."""

    name: str
    id: int
    mask: int
    fields: tuple[FieldSpec, ...]
    source: str

    def field(self, name: str) -> FieldSpec | None:
        """The field called ``name``, if the event has it."""
        for f in self.fields:
            if f.name == name:
                return f
        return None


def default_catalog_path() -> Path:
    """The shipped ``formats/blkif.toml``."""
    return formats_dir() / "blkif.toml"


def _field(raw: Mapping[str, Any], where: str) -> FieldSpec:
    try:
        name = str(raw["name"])
        typ = str(raw.get("type", "u32"))
        word = int(raw["word"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{where}: field needs name and word ({exc})") from exc
    if typ not in _TYPES:
        raise CatalogError(f"{where}: field {name!r} has unknown type {typ!r}")
    width = _TYPES[typ][0]
    bits = raw.get("bits")
    if bits is None:
        lo, hi = 0, min(width, 32) - 1
    else:
        if not (isinstance(bits, list) and len(bits) == 2):
            raise CatalogError(f"{where}: field {name!r}: bits must be [lo, hi]")
        lo, hi = int(bits[0]), int(bits[1])
    spec = FieldSpec(name=name, word=word, lo=lo, hi=hi, type=typ)
    if not (0 <= lo <= hi <= 31):
        raise CatalogError(f"{where}: field {name!r}: bit range [{lo}, {hi}] outside a word")
    if word < 0 or word + spec.words > MAX_WORDS:
        raise CatalogError(
            f"{where}: field {name!r} needs words {word}..{word + spec.words - 1}, "
            f"a guest record has at most {MAX_WORDS}"
        )
    return spec


def _read(path: Path) -> list[EventSpec]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: invalid TOML: {exc}") from exc
    out = []
    for i, ev in enumerate(data.get("event", [])):
        where = f"{path}: event #{i}"
        try:
            name = str(ev["name"])
            eid = int(ev["id"])
            mask = int(ev.get("mask", _DEFAULT_MASK))
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"{where}: needs name and id ({exc})") from exc
        fields = tuple(_field(f, f"{where} ({name})") for f in ev.get("field", []))
        out.append(EventSpec(name=name, id=eid, mask=mask, fields=fields, source=str(path)))
    return out


def load_blkif_catalog(extra: Sequence[Path] = ()) -> dict[str, EventSpec]:
    """The blkif events by name: the shipped catalog, then ``extra`` catalogs (later wins).

    A later catalog that redefines a name replaces the event (remap); one that
    reuses an id under another name takes the id away from the earlier event.
    """
    by_name: dict[str, EventSpec] = {}
    for path in (default_catalog_path(), *extra):
        for spec in _read(Path(path)):
            for other in [n for n, s in by_name.items() if (s.id, s.mask) == (spec.id, spec.mask)]:
                del by_name[other]
            if spec.name in BLKIF_EVENT_NAMES:
                by_name[spec.name] = spec
    return by_name


def field_expr(spec: FieldSpec) -> pl.Expr:
    """Polars expression extracting ``spec`` from the ``d0..d6`` columns of an events frame.

    A field whose words lie beyond the record's ``n_extra`` is null (a short
    guest record), never garbage from the zero-filled columns.
    """
    width, dtype = _TYPES[spec.type]
    present = pl.col("n_extra") >= spec.word + spec.words
    if width == 64:
        value = pl.col(f"d{spec.word}").cast(pl.UInt64) + pl.col(f"d{spec.word + 1}").cast(
            pl.UInt64
        ) * (1 << 32)
    else:
        nbits = spec.hi - spec.lo + 1
        value = (pl.col(f"d{spec.word}").cast(pl.UInt64) // (1 << spec.lo)) % (1 << nbits)
        if spec.type in ("i16", "i32"):
            sign = 1 << (width - 1)
            signed = value.cast(pl.Int64)
            value = pl.when(signed >= sign).then(signed - (1 << width)).otherwise(signed)
        elif spec.type == "bool":
            value = value != 0
    return pl.when(present).then(value.cast(dtype)).otherwise(None).alias(spec.name)


def select_events(events: pl.DataFrame, spec: EventSpec) -> pl.DataFrame:
    """The records of ``events`` that are ``spec``, with its fields extracted.

    Keeps ``ns``, ``tsc``, ``cpu`` and ``_ord`` (the row's position in the
    merged time order, the tie-break for records that share a TSC).
    """
    base = events if "_ord" in events.columns else events.with_row_index("_ord")
    hit = base.filter((pl.col("event") & spec.mask) == spec.id)
    return hit.select(
        pl.col("_ord").cast(pl.Int64),
        "ns",
        "tsc",
        "cpu",
        *[field_expr(f) for f in spec.fields],
    )


__all__ = [
    "BLKIF_EVENT_NAMES",
    "EventSpec",
    "FieldSpec",
    "default_catalog_path",
    "field_expr",
    "load_blkif_catalog",
    "select_events",
]

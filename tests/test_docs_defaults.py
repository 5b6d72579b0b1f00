"""The settings tables in docs/ quote defaults; the config schema owns them. A default changed in code and
not in the docs fails here, so the docs cannot drift from the schema (as the README commands cannot)."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from fractions import Fraction
from pathlib import Path

from reslab.builder.config import ResBuilderConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"


def schema_defaults(cls: type) -> dict[str, object]:
    out = {}
    for f in fields(cls):
        out[f.name] = f.default if f.default is not MISSING else f.default_factory()
    return out


def documented(text: str, value: object) -> bool:
    """Whether the docs' ``text`` states ``value``; a fraction may be written as one (``1/3``)."""
    if re.fullmatch(r"\d+/\d+", text) and isinstance(value, float):
        return float(Fraction(text)) == value
    return text == yaml_text(value)


def yaml_text(value: object) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def test_resbuilder_settings_table_quotes_the_schema_defaults():
    defaults = schema_defaults(ResBuilderConfig)
    rows = re.findall(r"^\| (`[^|]+`) \| ([^|]+) \|", (DOCS / "resbuilder.md").read_text(), flags=re.M)
    checked = 0
    for keys_cell, values_cell in rows:
        keys = re.findall(r"`(\w+)`", keys_cell)
        values = [v.strip() for v in values_cell.split(",")]
        if not keys or len(keys) != len(values) or not all(k in defaults for k in keys):
            continue
        for key, value in zip(keys, values, strict=True):
            assert documented(value, defaults[key]), f"docs/resbuilder.md: {key} {value}, schema {defaults[key]}"
            checked += 1
    assert checked >= 12, f"only {checked} documented defaults found: has the table's format changed?"

"""Metric tables as text, CSV (the reference's layout), Markdown and JSON."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from clipdet.evaluation.metrics import AVERAGE_COLUMN

FORMATS = ("csv", "md", "json")


def to_text(table: pd.DataFrame) -> str:
    """As the reference prints it: 3 decimals."""
    return table.to_string(float_format=lambda x: f"{x:5.3f}")


def to_long(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (metric, model, typ): value and, when computed, the CI bounds."""
    rows = []
    for metric, table in tables.items():
        types = [c for c in table.columns if not c.endswith(("_lo", "_hi"))]
        for model, row in table.iterrows():
            for typ in types:
                record = {"metric": metric, "model": model, "typ": typ, "value": row[typ]}
                if f"{typ}_lo" in table.columns:
                    record["ci_low"], record["ci_high"] = row[f"{typ}_lo"], row[f"{typ}_hi"]
                rows.append(record)
    return pd.DataFrame(rows)


def to_markdown(tables: dict[str, pd.DataFrame]) -> str:
    parts = []
    for metric, table in tables.items():
        types = [c for c in table.columns if not c.endswith(("_lo", "_hi"))]
        rows = []
        for model, row in table.iterrows():
            cells = []
            for typ in types:
                cell = _fmt(row[typ])
                if f"{typ}_lo" in table.columns and typ != AVERAGE_COLUMN:
                    cell += f" [{_fmt(row[f'{typ}_lo'])}, {_fmt(row[f'{typ}_hi'])}]"
                cells.append(cell)
            rows.append((model, cells))
        parts.append(_markdown_table(metric, types, rows))
    return "\n\n".join(parts) + "\n"


def _markdown_table(corner: str, columns, rows) -> str:
    """A Markdown table: ``corner`` heads the row labels; ``rows`` are (label, cells)."""
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if isinstance(value, int | np.integer):
        return str(value)
    return f"{value:.3f}"


def _target(path: str | Path, fmt: str) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(records: list[dict], path: Path) -> None:
    """Records as JSON, NaN as null."""
    clean = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in records
    ]
    path.write_text(json.dumps(clean, indent=1), encoding="utf-8")


def save_tables(tables: dict[str, pd.DataFrame], path: str | Path, fmt: str) -> Path:
    """CSV: the reference's wide table for one metric without CI, the long table otherwise."""
    path = _target(path, fmt)
    if fmt == "md":
        path.write_text(to_markdown(tables), encoding="utf-8")
    elif fmt == "json":
        _write_json(to_long(tables).to_dict(orient="records"), path)
    elif len(tables) == 1 and not any(c.endswith("_lo") for c in next(iter(tables.values()))):
        next(iter(tables.values())).to_csv(path)
    else:
        to_long(tables).to_csv(path, index=False)
    return path


def save_attribution_table(table: pd.DataFrame, path: str | Path, fmt: str) -> Path:
    """Attribution figures (one row per model) as CSV, Markdown or JSON records."""
    path = _target(path, fmt)
    if fmt == "csv":
        table.to_csv(path)
    elif fmt == "md":
        rows = [(m, [_fmt(table.at[m, c]) for c in table.columns]) for m in table.index]
        path.write_text(_markdown_table("model", table.columns, rows) + "\n", encoding="utf-8")
    else:
        records = [{"model": m, **row} for m, row in table.astype(float).iterrows()]
        _write_json(records, path)
    return path

"""Check output files against the machine-readable schemas in <repo>/schemas/ (`pipeline.schemas`)."""
from __future__ import annotations

import re

import pyarrow as pa

from pipeline.schemas import load


def check_json(obj: dict, schema_name: str) -> None:
    """Raise jsonschema.ValidationError unless `obj` conforms (stats.schema.json, run.schema.json, ...)."""
    import jsonschema

    jsonschema.validate(obj, load(schema_name))


def _type_ok(arrow_type: pa.DataType, expected: str) -> bool:
    if expected == "fixed_size_list<halffloat>":
        return pa.types.is_fixed_size_list(arrow_type) and pa.types.is_float16(arrow_type.value_type)
    return str(arrow_type) == expected


def check_parquet(table: pa.Table, schema_name: str = "scores.parquet.json") -> None:
    """Raise ValueError unless the table's columns, types, nullability and value rules conform."""
    spec = load(schema_name)
    names = set(table.column_names)
    problems = []
    for col in spec["columns"]:
        n = col["name"]
        if n not in names:
            if col["required"]:
                problems.append(f"missing column {n}")
            continue
        arr = table.column(n)
        if not _type_ok(arr.type, col["type"]):
            problems.append(f"{n}: type {arr.type}, expected {col['type']}")
        if not col["nullable"] and arr.null_count:
            problems.append(f"{n}: {arr.null_count} nulls in a non-nullable column")
        values = [v for v in arr.to_pylist() if v is not None] if ("enum" in col or "pattern" in col) else []
        if "enum" in col and any(v not in col["enum"] for v in values):
            problems.append(f"{n}: values outside {col['enum']}")
        if "pattern" in col and any(not re.match(col["pattern"], v) for v in values):
            problems.append(f"{n}: values not matching {col['pattern']}")
    allowed = {str(t) for t in (pa.bool_(), pa.int64(), pa.float64(), pa.string(), pa.null())}
    known = {c["name"] for c in spec["columns"]}
    status = table.column("status").to_pylist() if "status" in names else []
    for n in sorted(names - known):
        pattern = next((c for c in spec.get("pattern_columns", []) if re.match(c["pattern"], n)), None)
        if pattern is None:
            if str(table.column(n).type) not in allowed:
                problems.append(f"extra column {n}: type {table.column(n).type} not allowed")
        elif not _type_ok(table.column(n).type, pattern["type"]):
            problems.append(f"{n}: type {table.column(n).type}, expected {pattern['type']}")
        elif [v is None for v in table.column(n).to_pylist()] != [st != "ok" for st in status]:
            problems.append(f"{n}: null where the row was scored or set where it was not")
    if table.num_rows:
        error = table.column("error").to_pylist()
        score = table.column("score").to_pylist()
        flagged = table.column("flagged").to_pylist()
        for i, (st, er, sc, fl) in enumerate(zip(status, error, score, flagged)):
            if (st == "error") != (er is not None) or (st == "ok") != (sc is not None) or (fl and st != "ok"):
                problems.append(f"row {i}: inconsistent status/error/score/flagged ({st}, {er}, {sc}, {fl})")
                break
        if table.column("index").to_pylist() != list(range(table.num_rows)):
            problems.append("index is not 0..n-1 in order")
    if problems:
        raise ValueError("; ".join(problems))

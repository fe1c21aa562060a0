"""Schema conformance: a write must match its table's declared schema (:mod:`hitpredict.schemas`).

Runs on both sides: the driver checks a DataFrame's Spark schema before a write
(:func:`conform`, :func:`_check_projection`), and the executors check NOT NULL columns on the
data itself as they write it (:func:`check_not_null`). Every difference is named.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from hitpredict.schemas import arrow_schema, spark_schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

__all__ = ["SchemaMismatchError", "check_not_null", "conform", "schema_differences"]


class SchemaMismatchError(ValueError):
    """A DataFrame does not match the declared schema of the table it is written to."""


def schema_differences(table: str, actual: "StructType") -> list[str]:
    """Human-readable differences between ``actual`` and ``table``'s declared schema.

    Nullability is not compared here (Spark marks almost everything nullable);
    NOT NULL columns are checked on the data itself when it is written.
    """
    expected = {f.name: f.dataType.simpleString() for f in spark_schema(table).fields}
    got = {f.name: f.dataType.simpleString() for f in actual.fields}
    problems = [f"missing column {n} ({t})" for n, t in expected.items() if n not in got]
    problems += [f"unexpected column {n} ({t})" for n, t in got.items() if n not in expected]
    problems += [
        f"column {n} is {got[n]}, table has {t}"
        for n, t in expected.items()
        if n in got and got[n] != t
    ]
    return problems


def conform(table: str, df: "DataFrame") -> "DataFrame":
    """Return ``df`` with the table's column order, or raise ``SchemaMismatchError``."""
    problems = schema_differences(table, df.schema)
    if problems:
        raise SchemaMismatchError(f"refusing to write to table {table!r}: " + "; ".join(problems))
    return df.select(*[f.name for f in arrow_schema(table)])


def _check_projection(table: str, schema: "StructType") -> None:
    """``schema`` must hold every column of ``table`` with the table's types (other columns are allowed)."""
    from pyspark.sql.types import StructType

    names = set(arrow_schema(table).names)
    problems = schema_differences(table, StructType([f for f in schema.fields if f.name in names]))
    if problems:
        raise SchemaMismatchError(f"refusing to write to table {table!r}: " + "; ".join(problems))


def check_not_null(table: str, data: pa.Table) -> None:
    """Raise ``ValueError`` if a NOT NULL column of ``table`` holds nulls."""
    for field in arrow_schema(table):
        if not field.nullable and data.column(field.name).null_count:
            column = data.column(field.name)
            first = pc.index(pc.is_null(column), True).as_py()
            raise ValueError(
                f"table {table!r}: column {field.name} is NOT NULL but {column.null_count} "
                f"row(s) are null (first at row {first} of a batch)"
            )

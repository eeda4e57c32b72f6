"""A scenario's tables in PostgreSQL: each file copied into a table, and the configs' `table` entries pointed at it.

Used by a scenario's `--from-postgres URL` and by the tests that read tables from the PostgreSQL the suite starts
(tests/conftest.py). Column types are those pandas reads from a CSV file (whole numbers, other numbers, text; an
empty cell is NULL, as the parties read it), or a Parquet file's own; rows keep the file's order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from protocol.data.sql import libpq_url, quote_name
from protocol.keys.keyfiles import read_passphrase_file


def load_file(url: str, password_file: Path | None, path: Path, schema: str) -> str:
    """Copy a CSV or Parquet file into table `schema`.<the file's stem> (replacing it); the table's name."""
    if path.suffix.lower() in (".parquet", ".pq"):
        data = pq.read_table(path)
    else:
        data = pa.Table.from_pandas(pd.read_csv(path, keep_default_na=False, na_values=[""]), preserve_index=False)
    data = data.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in data.schema]))
    from adbc_driver_postgresql import dbapi

    password = read_passphrase_file(password_file) if password_file else None
    with dbapi.connect(libpq_url(url, password, read_only=False)) as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_name(schema)}")
        cursor.adbc_ingest(path.stem, data, mode="replace", db_schema_name=schema)
        connection.commit()
    return f"{schema}.{path.stem}"


def to_postgres(sections: dict, file_of: Callable[[str], Path], url: str, password_file: Path | None,
                schema: str) -> dict:
    """`sections` of a config with every `table` (a file, found by `file_of`) copied into `schema` and replaced by
    the SQL source `{url, name, password_file}` that reads it back."""
    out = {}
    for key, value in sections.items():
        if key == "table" and isinstance(value, str):
            name = load_file(url, password_file, file_of(value), schema)
            value = {"url": url, "name": name, **({"password_file": str(password_file)} if password_file else {})}
        elif isinstance(value, dict):
            value = to_postgres(value, file_of, url, password_file, schema)
        out[key] = value
    return out

"""A table read from a PostgreSQL database: a URL and a query or a table name, streamed as Arrow record batches.

ADBC's PostgreSQL driver reads a result with COPY in binary and hands it over as Arrow batches of about 16 MB,
so a large table is never held whole. Rows are numbered from 1 in the result's order. The password comes from
a file or an environment variable and never appears in the URL, a message or a log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit

import pyarrow as pa

from protocol.errors import ConfigError, DataError
from protocol.keys.keyfiles import Passphrase
from protocol.settings.config import Table, read_passphrase

SCHEMES = ("postgresql", "postgres")
SHOWN_QUERY = 60  # characters of a query shown in messages
CONNECT_TIMEOUT = 10  # seconds, unless the URL sets connect_timeout


@dataclass(frozen=True)
class SqlSource:
    """A query's result, or a whole table, in a PostgreSQL database."""

    url: str  # without a password
    query: str
    name: str | None = None  # the table's name when the config gave one instead of a query
    password: Passphrase | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, t: Table) -> "SqlSource":
        """`table = { url = "postgresql://user@host:port/db", query = "SELECT ..." }` (or `name = "schema.table"`
        instead of `query`), with at most one of `password_file` and `password_env`."""
        url = t.take("url", str)
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise t.error("url", f"expected a PostgreSQL URL, postgresql://user@host:port/database, got {url!r}")
        if parts.password is not None or any(k == "password" for k, _ in parse_qsl(parts.query)):
            raise t.error("url", "holds a password: give it in password_file or password_env instead")
        given = [k for k in ("query", "name") if k in t.data]
        if len(given) != 1:
            raise t.error("query", f"{'both given' if given else 'missing'}: give exactly one of query and name")
        password = read_passphrase(t, "password", required=False)
        if given[0] == "name":
            name = t.take("name", str)
            if not re.fullmatch(r"[^.\"]+(\.[^.\"]+)?", name):
                raise t.error("name", f"expected table or schema.table, got {name!r}")
            query = "SELECT * FROM " + ".".join(quote_name(part) for part in name.split("."))
        else:
            name, query = None, t.take("query", str).strip().rstrip(";").strip()
            if not query:
                raise t.error("query", "is empty")
        t.finish()
        return cls(url, query, name, password)

    def __str__(self) -> str:
        parts = urlsplit(self.url)
        where = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if self.name is not None:
            return f"{where} table {self.name}"
        query = " ".join(self.query.split())
        return f"{where} query {query if len(query) <= SHOWN_QUERY else query[:SHOWN_QUERY - 3] + '...'!r}"

    def columns(self) -> list[str]:
        """The result's column names, without reading a row."""
        with self._cursor() as cursor:
            cursor.execute(f"SELECT * FROM ({self.query}) AS source LIMIT 0")
            return list(cursor.fetch_arrow_table().schema.names)

    def batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """`columns` of the result, in its order, a record batch at a time as the server sends them."""
        selected = ", ".join(quote_name(c) for c in columns)
        with self._cursor() as cursor:
            cursor.execute(f"SELECT {selected} FROM ({self.query}) AS source")
            yield from cursor.fetch_record_batch()

    @contextmanager
    def _cursor(self) -> Iterator:
        """A cursor on a read-only session; a driver error (connecting, or while the caller reads) becomes a
        DataError naming this source."""
        try:
            from adbc_driver_manager import Error as DriverError
            from adbc_driver_postgresql import dbapi
        except ImportError:
            raise ConfigError(f"{self}: reading from a database needs the sql extra (pip install 'vfrec[sql]')") \
                from None
        try:
            with dbapi.connect(libpq_url(self.url, self.password)) as connection, connection.cursor() as cursor:
                yield cursor
        except DriverError as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> DataError:
        """One line naming this source and the server's reason, never the password."""
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        reason = re.sub(r"^[A-Z_]+: ", "", lines[0]).replace("[libpq] ", "")
        if self.password is not None:
            reason = reason.replace(self.password.value.decode("utf-8"), "***")
        return DataError(f"{self} cannot be read: {' '.join(reason.split())}")


def libpq_url(url: str, password: Passphrase | None, read_only: bool = True) -> str:
    """The URL libpq is given: `url` with the password, a connect timeout, and (`read_only`) sessions that refuse
    to write, each unless the URL sets it."""
    given = {k for k, _ in parse_qsl(urlsplit(url).query)}
    extra = [("connect_timeout", str(CONNECT_TIMEOUT)), ("options", "-c default_transaction_read_only=on")]
    extra = [(k, v) for k, v in extra[:1 + read_only] if k not in given]
    if password is not None:
        extra.append(("password", password.value.decode("utf-8")))
    tail = "&".join(f"{k}={quote(v, safe='')}" for k, v in extra)
    return url + ("&" if urlsplit(url).query else "?") + tail if tail else url


def quote_name(name: str) -> str:
    """An SQL identifier, quoted: matched exactly as written, case included."""
    return '"' + name.replace('"', '""') + '"'


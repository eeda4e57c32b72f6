"""`normalize_many` gives byte for byte what `Normalizer.__call__` gives, for every kind of ID and every setting."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.data.tables import read_text_column
from protocol.errors import DataError
from psi.ids import ASCII_SPACE, Normalizer, normalize_ids, normalize_many, stream_ids

# ASCII letters, digits, phone punctuation, every ASCII whitespace, and characters a Unicode form, casefold or \s
# treat differently from ASCII: full-width and Arabic-Indic digits, ß, ligatures, dotted I, combining marks,
# non-breaking and ideographic spaces
ALPHABET = ("aZ09 +-().@_\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x00\x7f" "ÄäßẞﬁİıΣς\u0301\u00a0\u2003\u3000\u200b"
            "１２٣\u0665ＡＢ①")
NORMALIZERS = st.builds(Normalizer, kind=st.sampled_from(["text", "email", "phone"]),
                        unicode_form=st.sampled_from(["NFKC", "NFC", "NFKD", "NFD", "none"]),
                        casefold=st.booleans(), country_code=st.sampled_from(["", "1", "44", "0"]))


def test_ascii_space_is_what_python_strips_and_matches() -> None:
    ascii_chars = [chr(c) for c in range(128)]
    assert set(ASCII_SPACE) == {c for c in ascii_chars if c.isspace()} == {c for c in ascii_chars
                                                                          if re.match(r"\s", c)}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(ALPHABET, max_size=12), max_size=20), NORMALIZERS)
@example(["a@b", "C"], Normalizer(kind="email"))  # nothing to drop: Arrow's ascii_lower sees the slice's offsets
def test_same_as_one_at_a_time(values: list[str], normalizer: Normalizer) -> None:
    expected = [normalizer(v) for v in values]
    assert normalize_many(values, normalizer).to_pylist() == expected
    assert normalize_many(pa.array(["Xy", *values]).slice(1), normalizer).to_pylist() == expected  # as streamed


def test_same_on_a_slice_of_many_mixed_values() -> None:
    """A slice (an array that starts at an offset, as streamed chunks do) of mostly ASCII values with some others."""
    rng = random.Random(7)
    pieces = [" Ann.Lee@Example.COM", "+1 (555) 010-4477", "00 44 20 7946 0958", "020 7946 0958", "Jean \t Dupont",
              "  ", "", "Straße", "ＡＬＩＣＥ", "\u00a0x@y.z", "٣٤٥", "a\x1cb"]
    values = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))) for _ in range(3000)]
    array = pa.array(["head", *values], pa.string()).slice(1)
    for normalizer in (Normalizer(kind="email"), Normalizer(kind="text"), Normalizer(kind="text", casefold=False),
                       Normalizer(kind="phone"), Normalizer(kind="phone", country_code="44", unicode_form="none")):
        assert normalize_many(array, normalizer).to_pylist() == [normalizer(v) for v in values]


def test_missing_values_are_empty() -> None:
    assert normalize_many(pa.array(["A", None]), Normalizer()).to_pylist() == ["a", ""]
    assert normalize_many([], Normalizer(kind="phone")).to_pylist() == []


def test_streamed_store_is_each_value_normalised(tmp_path) -> None:
    values = [f"{'Ü' if i % 7 == 0 else 'u'}ser.{i} @Example.COM\x1f" for i in range(50)]
    path = tmp_path / "users.csv"
    path.write_text("email\n" + "\n".join(f'"{v}"' for v in values) + "\n", encoding="utf-8")
    store = stream_ids(path, "email", Normalizer(kind="email"), chunk_rows=8)
    assert list(store) == [Normalizer(kind="email")(v) for v in values]
    assert pc.count(store.values).as_py() == 50


@pytest.mark.parametrize("text", ["id,x\na,1\n   \nb,2\n", "id\na\n \nb\n", "id,x\na,1\nb,2,3\n",
                                  b"id\n\xe9t\xe9\n", "id,x\n\"a\nb\",1\n\"\",2\n"])
def test_streamed_store_reads_the_rows_pandas_reads(tmp_path, text: str | bytes) -> None:
    """Lines of blanks (pandas skips them), lines Arrow cannot parse, other encodings: the same IDs or message."""
    path = tmp_path / "users.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())

    def outcome(read: Callable[[], list[str]]) -> list[str] | str:
        try:
            return read()
        except DataError as exc:
            return str(exc)

    by_pandas = outcome(lambda: normalize_ids([v for c in read_text_column(path, "id", 2) for v in c], Normalizer(),
                                              path, "id"))
    assert outcome(lambda: list(stream_ids(path, "id", Normalizer(), chunk_rows=2))) == by_pandas


@pytest.mark.parametrize("column", [pd.Series([5.0, 12.5, 7.0, 300.0]), pd.Series([3, 1, 2, 4]),
                                    pd.Series(["b", "a", "d", "c"], dtype="category"),
                                    pd.Series(["b", " a", "d", "C"])])
def test_streamed_store_reads_a_parquet_column_as_pandas_writes_it(tmp_path, column: pd.Series) -> None:
    """Numbers, categories and text in Parquet: the strings pandas gives (5.0 is "5.0", not Arrow's "5")."""
    path = tmp_path / "users.parquet"
    pd.DataFrame({"id": column}).to_parquet(path, index=False)
    by_pandas = [v for c in read_text_column(path, "id", 3) for v in c]
    assert list(stream_ids(path, "id", Normalizer(), chunk_rows=3)) == [Normalizer()(v) for v in by_pandas]

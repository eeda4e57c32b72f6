"""Recommendations from A's stored model, computed by A alone: no call to B or the coordinator.

A request names one of A's user IDs (normalised as in training). A known user is
served by what its activity segment (its number of events at A: 0-2, 3-10, 11+)
chose on validation at training (the manifest's "segments"):
- "federated": the federated model with B's contribution u from the u store
  (computed at training and kept fresh by B's refreshes); a user outside the
  intersection gets A alone instead;
- "a_alone": A alone, trained in the same run;
- "item_knn": item-kNN on A's events, as fitted at training, summed over the user's
  whole history, as it was scored on validation;
- "popularity": the most bought items.
A user A does not know gets "popularity". A user of the u store who is no longer
active in the shared list (`<workdir>/psi/shared.parquet`, rewritten by each PSI: the
user left the intersection) is served as A's user outside it.
Every user of A is represented by all its positive items (oldest first, as in
training), and those items are left out of its answer unless asked for.

Scoring is exhaustive and exact: the item vectors are computed once at load, so a
request costs one product z·Vᵀ over the catalogue (the retrieval stage) and, when
the model has its item-item part, that part for the same items; then top-k. Users
are scored one at a time, z here and the catalogue part by party_a/models/scoring.py (which
`recommend` runs on A's workers), so a user's scores are the same bits whichever way
it is asked for (one request, a batch, or `recommend`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from party_a.config import PartyAConfig
from party_a.data.tables import ActiveTables, align, load_tables
from party_a.models.model import ActiveModel
from party_a.data.sampler import pad_histories
from party_a.models.scoring import baseline_catalogue, top_items
from party_a.data.segments import SEGMENTS, segment_of
from party_a.serving.store import ITEM_KNN, U_STORE, model_settings, read_u_store, stored_encodings
from protocol.data.stored import load_state, read_frame
from protocol.data.tables import read_table
from protocol.errors import ConfigError, StoreError
from protocol.roles import A
from protocol.store.models import CURRENT, current_model
from psi.shared import read_shared, shared_path

log = logging.getLogger(__name__)
Source = Literal["federated", "a_alone", "item_knn", "popularity"]


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    columns: dict[str, object]


@dataclass(frozen=True)
class Answer:
    user_id: str
    source: Source
    items: list[Recommendation]


@dataclass(frozen=True)
class Query:
    """A known user's part of its scores: what it is scored by, its row, z (the catalogue's width; zeros for a
    baseline) and its whole history as item indices."""

    source: Source
    row: int
    z: torch.Tensor
    items: torch.Tensor


@dataclass(frozen=True)
class UStore:
    """The u store as loaded: u per row of A's user table (shared users still active in the shared list only), when
    the file was written, and its users A's user table did not hold when the Recommender was loaded."""

    u: dict[int, np.ndarray]
    stamp: tuple[int, int]  # (inode, mtime in ns) of the file it was read from
    written: float
    unknown: frozenset[str]


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(inode, mtime in ns) of a file, None when it is missing: a rewritten (replaced) file has another."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def active_shared(workdir: Path) -> frozenset[str] | None:
    """The users active in the shared list each PSI writes (None without one: every user of the u store is
    shared)."""
    if not shared_path(workdir).is_file():
        return None
    frame = read_shared(workdir)
    return frozenset(frame.loc[frame["active"], "user_id"])


def stored_segments(manifest: dict) -> dict[str, str]:
    """Each activity segment's choice as stored with the model; a model stored before segments were chosen
    serves every segment by the federated model."""
    return manifest.get("segments", {name: "federated" for name, _, _ in SEGMENTS})


class Recommender:
    """A's two stored models, the baselines segments chose, A's own data, and the u store; answers requests."""

    def __init__(self, cfg: PartyAConfig, directory: Path, manifest: dict, ids: list[str], tables: ActiveTables,
                 models: dict[str, ActiveModel], item_columns: list[dict[str, object]], alone: bool,
                 item_knn: np.ndarray | None = None):
        self.cfg, self.directory, self.manifest, self.alone = cfg, directory, manifest, alone
        self.model_id: str = manifest["model_id"]
        self.item_ids = tables.items
        self.n_items = len(tables.items)
        self.row_of = {uid: r for r, uid in enumerate(ids)}
        self.histories = tables.histories
        self.models = models
        self.segments = stored_segments(manifest)
        counts = tables.item_counts
        with torch.no_grad():
            self.catalogues = {name: model.catalogue() for name, model in models.items()}
        self.width = self.catalogues["federated"].v.shape[1]
        self.catalogues["popularity"] = baseline_catalogue(self.width, counts.astype(np.float64))
        if item_knn is not None:
            self.catalogues["item_knn"] = baseline_catalogue(self.width, np.zeros(self.n_items), item_knn)
        self.popular = np.argsort(-counts, kind="stable")
        self.popularity = counts
        self.item_columns = item_columns
        self.h = models["federated"].bias.shape[0]
        self._lock = threading.Lock()
        self.workdir = cfg.basics.workdir
        self.shared_stamp = file_stamp(shared_path(self.workdir))
        self.active = active_shared(self.workdir)
        self.store = self._read_u_store()
        self.unknown_at_load = self.store.unknown
        if self.store.unknown:
            log.warning("the u store of model %s holds %d users A's user table does not: they are served once A's "
                        "tables hold them", self.model_id, len(self.store.unknown))

    @classmethod
    def load(cls, cfg: PartyAConfig, alone: bool = False) -> "Recommender":
        """The model in service at A with A's tables; `alone`: every known user is served by A alone, as A
        would serve without federation (bench/serve.py measures what federation costs a request)."""
        training = cfg.training
        if training is None:
            raise ConfigError("party A's config has no [interactions]: there is no model to serve")
        directory, manifest = current_model(cfg.basics.workdir, A)
        frame, ids = cfg.users.load()
        tables = load_tables(frame, ids, cfg.users.table, cfg.users.normalizer, training.interactions,
                             training.items, encodings=stored_encodings(manifest))
        stored_items = read_frame(directory, "items.parquet", ["item_id"])["item_id"].tolist()
        if stored_items != tables.items:
            raise StoreError(f"{training.interactions.path} and the items table name {len(tables.items)} items, "
                             f"but model {manifest['model_id']!r} ({directory}) was trained on {len(stored_items)} "
                             f"others or in another order; train a new model")
        settings = model_settings(manifest)
        data = align(tables, np.arange(len(ids)))  # every user of A; what the models' buffers hold is loaded
        models = {}
        for name, file in (("federated", "federated.pt"), ("a_alone", "alone.pt")):
            model = ActiveModel(data, settings, manifest["ease_lambda"])
            try:
                model.load_state_dict(load_state(directory, file))
            except RuntimeError as exc:
                raise StoreError(f"{directory / file} does not fit the model settings in its manifest: "
                                 f"{str(exc)[:300]}") from None
            models[name] = model.eval()
        item_knn = None
        if "item_knn" in stored_segments(manifest).values():
            item_knn = load_state(directory, ITEM_KNN)["weights"].numpy()
            if item_knn.shape != (len(stored_items),) * 2:
                raise StoreError(f"{directory / ITEM_KNN} holds weights of shape {item_knn.shape}, not "
                                 f"{len(stored_items)} × {len(stored_items)} items")
        return cls(cfg, directory, manifest, ids, tables, models, item_columns(cfg, tables.items), alone, item_knn)

    # ---- the u store -------------------------------------------------------------------------

    def _read_u_store(self) -> UStore:
        path = self.directory / U_STORE
        stat = path.stat()
        frame = read_u_store(self.directory, self.h)
        u = frame[[f"u{j}" for j in range(self.h)]].to_numpy(dtype=np.float32)
        by_row = {self.row_of[uid]: u[i] for i, uid in enumerate(frame["user_id"])
                  if uid in self.row_of and (self.active is None or uid in self.active)}
        unknown = frozenset(uid for uid in frame["user_id"] if uid not in self.row_of)
        return UStore(by_row, (stat.st_ino, stat.st_mtime_ns), float(frame["written"].max()), unknown)

    def refresh_if_changed(self) -> bool:
        """Take a new u store if the file was replaced (a refresh); True if it was."""
        try:
            stat = os.stat(self.directory / U_STORE)
        except OSError:
            return False
        if (stat.st_ino, stat.st_mtime_ns) == self.store.stamp:
            return False
        with self._lock:
            if (stat.st_ino, stat.st_mtime_ns) != self.store.stamp:
                self.store = self._read_u_store()
                log.info("u store reloaded: %d shared users, written %s", len(self.store.u),
                         time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.store.written)))
        return True

    def stale_reason(self) -> str | None:
        """Why the service must load a whole new Recommender, None when it need not: CURRENT names another model,
        the shared list was rewritten, or a refresh brought users into the u store that A's tables did not hold
        at load (new customers: A's tables are read again)."""
        pointer = self.workdir / "models" / CURRENT
        try:
            named = pointer.read_text().strip()
        except OSError:
            named = self.model_id  # no CURRENT to follow: keep serving what is loaded
        if named != self.model_id:
            return f"{pointer} names model {named!r}"
        stamp = file_stamp(shared_path(self.workdir))
        if stamp != self.shared_stamp:
            return f"{shared_path(self.workdir)} was {'removed' if stamp is None else 'rewritten'}" + (
                "" if stamp is None else f" (mtime {stamp[1]} ns)")
        new = self.store.unknown - self.unknown_at_load
        if new:
            return f"the u store holds {len(new)} users A's tables did not hold at load"
        return None

    def u_store_age_seconds(self) -> float:
        return time.time() - self.store.written

    def shared_users(self) -> int:
        return len(self.store.u)

    # ---- answers ------------------------------------------------------------------------------

    def normalise(self, user_id: str) -> str | None:
        try:
            return self.cfg.users.normalizer(user_id)
        except (ValueError, TypeError):
            return None

    def source(self, row: int | None, store: UStore) -> Source:
        """What serves a user: its segment's choice (A alone for a user without u, or for every model choice
        with `alone`); popularity for a user A does not know."""
        if row is None:
            return "popularity"
        chosen = self.segments[segment_of(len(self.histories[row]))]
        return "a_alone" if chosen == "federated" and (self.alone or row not in store.u) else chosen

    @torch.no_grad()
    def query(self, user_id: str, store: UStore) -> Query | None:
        """What scoring needs of A's model and data for this user (None: a user A does not know)."""
        normalised = self.normalise(user_id)
        row = self.row_of.get(normalised) if normalised is not None else None
        if row is None:
            return None
        source = self.source(row, store)
        if source not in self.models:  # a baseline: its catalogue ignores z and reads the whole history, as scored
            return Query(source, row, torch.zeros(self.width), torch.from_numpy(self.histories[row].astype(np.int64)))
        history = torch.from_numpy(pad_histories([self.histories[row]]))
        u = store.u[row] if source == "federated" else np.zeros(self.h, dtype=np.float32)
        z, items, _ = self.models[source].user_side(history, torch.tensor([row]), torch.tensor(u)[None, :])
        return Query(source, row, z[0, 0], items[0])

    def recommend(self, user_ids: list[str], k: int, include_bought: bool = False) -> list[Answer]:
        """Top-k for each user, in the order asked."""
        store = self.store
        answers = []
        for user_id in user_ids:
            query = self.query(user_id, store)
            if query is None:
                answers.append(self.popular_answer(user_id, k))
                continue
            bought = None if include_bought else self.histories[query.row]
            top, scores = top_items(self.catalogues[query.source], query.z, query.items, bought, k)
            answers.append(self.answer(user_id, query.source, top, scores))
        return answers

    def popular_answer(self, user_id: str, k: int) -> Answer:
        """The answer for a user A does not know: the k most bought items."""
        top = self.popular[:k]
        return self.answer(user_id, "popularity", top, self.popularity[top])

    def answer(self, user_id: str, source: Source, items: np.ndarray, scores: np.ndarray) -> Answer:
        """The answer from a user's top items and their scores (items scored -inf, already bought, left out)."""
        return Answer(user_id, source, [Recommendation(self.item_ids[j], float(s), self.item_columns[j])
                                        for j, s in zip(items, scores) if np.isfinite(s)])


def item_columns(cfg: PartyAConfig, item_ids: list[str]) -> list[dict[str, object]]:
    """Each item's feature columns as A's items table holds them (empty without an items table)."""
    spec = cfg.training.items
    if spec is None:
        return [{} for _ in item_ids]
    columns = [*spec.numeric, *spec.categorical]
    frame = read_table(spec.path, [spec.id_column, *columns], [spec.id_column])
    frame[spec.id_column] = frame[spec.id_column].str.strip()
    by_id = frame.set_index(spec.id_column)[columns]
    return [{c: _plain(v) for c, v in by_id.loc[item].items()} for item in item_ids]


def _plain(value: object) -> object:
    """A JSON-ready value (numpy scalars become Python ones)."""
    return value.item() if hasattr(value, "item") else value

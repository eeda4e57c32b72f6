"""Top-K for every user of A, offline, from the model in service: `python -m party_a recommend`.

    python -m party_a recommend --config a.toml --k 20 --out recs.parquet

One row per (user, rank): user_id, rank (from 1), item_id, score, source and the
item's columns. The scores are the ones the HTTP service gives for the same user
and u store: z is computed here one user at a time as the service does, and the
catalogue part (z·Vᵀ, item biases, the item-item term, top-k) by the same function
of party_a/models/scoring.py, on A's workers (`workers` and [compute]: local processes or
A's Ray cluster; inline with `workers = 0`), in chunks of users.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from party_a.config import load
from party_a.serving.recommender import Query, Recommender
from protocol.compute.pool import open_pool
from protocol.compute.workers import WorkerPool
from protocol.errors import ConfigError
from protocol.roles import A
from protocol.runtime.cli import setup_logging
from protocol.runtime.progress import progress_bar

log = logging.getLogger(__name__)
CHUNK = 64  # users per task sent to A's workers


def recommend_all(recommender: Recommender, user_ids: list[str], k: int, include_bought: bool, pool: WorkerPool,
                  progress: bool = True) -> pd.DataFrame:
    """The long table of every user's top-k: z here, one user at a time, and the catalogue part on `pool`
    (party_a.models.scoring, whose state is broadcast once to each worker), at most `pool.max_in_flight` chunks
    of users at once."""
    for name, catalogue in recommender.catalogues.items():
        pool.broadcast("party_a.models.scoring:install", recommender.model_id, name, catalogue.arrays())
    store = recommender.store
    rows: list[dict] = []
    pending: deque[tuple[list[str], list[Query | None], Future | None]] = deque()
    with progress_bar(total=len(user_ids), task="recommend", desc="recommend", unit="user", enabled=progress,
                      mininterval=1.0) as bar:
        for start in range(0, len(user_ids), CHUNK):
            chunk = user_ids[start:start + CHUNK]
            queries = [recommender.query(user_id, store) for user_id in chunk]
            pending.append((chunk, queries, _submit(pool, recommender, queries, k, include_bought)))
            while pending and (pending[0][2] is None or pending[0][2].done() or len(pending) > pool.max_in_flight):
                bar.update(_add_rows(rows, recommender, k, *pending.popleft()))
        while pending:
            bar.update(_add_rows(rows, recommender, k, *pending.popleft()))
    return pd.DataFrame(rows)


def _submit(pool: WorkerPool, recommender: Recommender, queries: list[Query | None], k: int,
            include_bought: bool) -> Future | None:
    """The task scoring a chunk's known users (None if it has none)."""
    known = [q for q in queries if q is not None]
    if not known:
        return None
    return pool.submit("party_a.models.scoring:top_items_task", recommender.model_id, [q.source for q in known],
                       np.stack([q.z.numpy() for q in known]), [q.items.numpy() for q in known],
                       [] if include_bought else [recommender.histories[q.row] for q in known], k, include_bought)


def _add_rows(rows: list[dict], recommender: Recommender, k: int, chunk: list[str], queries: list[Query | None],
              future: Future | None) -> int:
    """Add a chunk's rows to the table, in the order of its users; the number of users."""
    tops, scores = future.result() if future is not None else ([], [])
    scored = iter(zip(tops, scores))
    for user_id, query in zip(chunk, queries):
        answer = recommender.popular_answer(user_id, k) if query is None else \
            recommender.answer(user_id, query.source, *next(scored))
        for rank, item in enumerate(answer.items, start=1):
            rows.append({"user_id": user_id, "rank": rank, "item_id": item.item_id, "score": item.score,
                         "source": answer.source, **item.columns})
    return len(chunk)


def main(config_path: Path, k: int, out: Path, include_bought: bool = False) -> None:
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    cfg = load(config_path)
    setup_logging(A, cfg.basics.workdir)
    torch.set_num_threads(1)
    recommender = Recommender.load(cfg)
    _, ids = cfg.users.load()
    started = time.perf_counter()
    with open_pool(cfg.basics.compute, own="party_a") as pool:
        table = recommend_all(recommender, ids, k, include_bought, pool, cfg.psi.show_progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    seconds = time.perf_counter() - started
    sources = Counter(table.drop_duplicates("user_id")["source"]) if len(table) else Counter()
    log.info("model %s: top-%d for %d users in %.1fs (%.0f users/s) written to %s; %s", recommender.model_id, k,
             len(ids), seconds, len(ids) / seconds if seconds else 0.0, out,
             ", ".join(f"{n} {source}" for source, n in sources.items()))

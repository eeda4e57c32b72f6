"""Top-K for every user of A, offline, from the model in service: `python -m party_a recommend`.

    python -m party_a recommend --config a.toml --k 20 --out recs.parquet

One row per (user, rank): user_id, rank (from 1), item_id, score, source and the
item's columns. The scores are the ones the HTTP service gives for the same user
and u store (party_a/serving.py scores users one at a time).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from party_a.config import load
from party_a.serving import Recommender
from protocol.errors import ConfigError
from protocol.roles import A
from protocol.runtime.cli import setup_logging

log = logging.getLogger(__name__)


def recommend_all(recommender: Recommender, user_ids: list[str], k: int, include_bought: bool,
                  progress: bool = True) -> pd.DataFrame:
    """The long table of every user's top-k."""
    rows = []
    for user_id in tqdm(user_ids, desc="recommend", unit="user", disable=not progress, mininterval=1.0):
        answer = recommender.recommend([user_id], k, include_bought)[0]
        for rank, item in enumerate(answer.items, start=1):
            rows.append({"user_id": user_id, "rank": rank, "item_id": item.item_id, "score": item.score,
                         "source": answer.source, **item.columns})
    return pd.DataFrame(rows)


def main(config_path: Path, k: int, out: Path, include_bought: bool = False) -> None:
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    cfg = load(config_path)
    setup_logging(A, cfg.basics.workdir)
    torch.set_num_threads(1)
    recommender = Recommender.load(cfg)
    _, ids = cfg.users.load()
    started = time.perf_counter()
    table = recommend_all(recommender, ids, k, include_bought, cfg.psi.show_progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    seconds = time.perf_counter() - started
    sources = Counter(table.drop_duplicates("user_id")["source"]) if len(table) else Counter()
    log.info("model %s: top-%d for %d users in %.1fs (%.0f users/s) written to %s; %s", recommender.model_id, k,
             len(ids), seconds, len(ids) / seconds if seconds else 0.0, out,
             ", ".join(f"{n} {source}" for source, n in sources.items()))

"""The training report: its header (sizes, plan, A's baselines), one line of metrics for the log, and every
scorer's metrics per activity segment with each segment's choice.
"""

from __future__ import annotations

import numpy as np

from party_a.config import Training
from party_a.data.tables import ActiveData
from party_a.models.baselines import Baseline
from party_a.models.evaluate import SPLITS, EvalSet, metrics, per_user
from party_a.models.model import federated_start, model_scores
from party_a.data.segments import CANDIDATES, by_segment, choose, combined
from party_a.training.choice import Models
from protocol.layer.steps import Side


def metrics_line(name: str, m: dict, k: int) -> str:
    """One line for the log: `m`'s overall AUC, HR@k and NDCG@k, and its cold users' AUC."""
    o, c = m["overall"], m["cold"]
    cold = f"cold AUC {c['auc']:.4f}" if c["users"] else "no cold users"
    return f"{name}: AUC {o['auc']:.4f} HR@{k} {o['hr']:.4f} NDCG@{k} {o['ndcg']:.4f}, {cold}"


def new_report(data: ActiveData, lists: dict[str, EvalSet], baselines: list[Baseline], cfg: Training,
               side: Side) -> dict:
    """The report's header: sizes, plan, evaluation settings and A's single-party baselines."""
    k = cfg.eval.k
    valid, test = lists["valid"], lists["test"]
    return {
        "shared_users": data.n_users, "items": data.n_items, "evaluated_users": int(test.users.size),
        "cold_users": int(test.cold.sum()), "validation_users": int(valid.users.size),
        "plan": side.plan.to_message(), "key_bits": side.public.bits,
        "eval": {"k": k, "negatives": cfg.eval.negatives, "cold_max_train": cfg.eval.cold_max_train},
        "baselines": {b.name: {"setting": b.setting, "chosen": b.chosen,
                               "valid": metrics(b.scores(valid), valid.cold, k),
                               "test": metrics(b.scores(test), test.cold, k)} for b in baselines},
        "epochs": [],
    }


def segment_report(models: Models, baselines: list[Baseline], lists: dict[str, EvalSet], k: int) -> dict:
    """Every scorer's validation and test metrics per activity segment (party_a/data/segments.py), the scorer each
    segment chooses on validation among the federated model, A alone, item-kNN and popularity (the federated
    model unless another is significantly better), and the test metrics of every user scored by its segment's
    choice."""
    chosen = federated_start(models.alone)
    chosen.load_state_dict(models.selected.state)
    u = models.selected.u
    scorers = {"federated": lambda ev: model_scores(chosen, ev, u),
               "a_alone": lambda ev: model_scores(models.alone, ev, np.zeros_like(u)),
               **{b.name: b.scores for b in baselines}}
    scored = {split: {name: score(lists[split]) for name, score in scorers.items()} for split in SPLITS}
    per = {split: {name: by_segment(s, lists[split], k) for name, s in scored[split].items()} for split in SPLITS}
    choice = choose({name: per_user(scored["valid"][name], k)[2] for name in CANDIDATES}, lists["valid"].activity)
    return {"valid": per["valid"], "test": per["test"], "choice": choice,
            "combined": combined(scored["test"], choice, lists["test"], k),
            "combined_valid": combined(scored["valid"], choice, lists["valid"], k)}

"""Each party's own data as an attacker has it, and the other party's secrets as the audit scores against.

Read from a run's configs and PSI output, playing both roles (as scenarios/ does): A's
own data (its user columns, its purchases per item category, its number of purchases)
and its labels; B's own columns. An attack gets only its attacker's side and the
auxiliary users' secrets; the rest of the other side is the truth it is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audit.attacks import Columns, Labels
from party_a.data.tables import ActiveData
from party_b import config as party_b_config
from protocol.data.tables import Features, read_table
from scenarios.centralised import Joined, load_joined


@dataclass(frozen=True)
class Parties:
    """Both sides of the shared users, in the PSI order."""

    joined: Joined
    a_own: np.ndarray  # A's own data per user, as features
    b_own: np.ndarray  # B's own columns per user, as features
    labels: Labels  # A's secrets about each user
    columns: Columns  # B's secrets about each user

    @property
    def n_users(self) -> int:
        return self.joined.data.n_users


def feature_matrix(features: Features) -> np.ndarray:
    """A table's encoded columns as one matrix: the scaled numbers and one-hot categories."""
    parts = [features.numeric.astype(np.float64)]
    parts += [np.eye(k)[features.categorical[:, j]] for j, k in enumerate(features.cardinalities)]
    return np.hstack(parts)


def purchases_by_category(data: ActiveData) -> np.ndarray:
    """Per shared user, its training purchases counted per item category (the item table's first categorical
    column)."""
    category = data.item_features.categorical[:, 0]
    out = np.zeros((data.n_users, data.item_features.cardinalities[0]))
    for user, items in enumerate(data.train):
        np.add.at(out[user], category[items], 1)
    return out


def a_labels(data: ActiveData, category_names: list[str]) -> Labels:
    """A's secrets: bought in each category; the top category is the most common one; at least the median
    number of purchases."""
    counts = purchases_by_category(data)
    top = counts.argmax(1)
    common = int(np.bincount(top[counts.sum(1) > 0]).argmax())
    events = counts.sum(1)
    names = [f"bought {c}" for c in category_names] + [f"top category {category_names[common]}", "active"]
    values = np.column_stack([counts > 0, (top == common) & (events > 0), events >= np.median(events)])
    return Labels(names, values.astype(bool))


def a_own(data: ActiveData) -> np.ndarray:
    """A's own data per shared user: its user columns, share of purchases per category, log purchases."""
    counts = purchases_by_category(data)
    events = counts.sum(1, keepdims=True)
    return np.hstack([feature_matrix(data.user_features), counts / np.maximum(events, 1), np.log1p(events)])


def load_parties(config_a: Path, config_b: Path) -> Parties:
    """Both parties' data for the shared users of a run whose PSI (or plain alignment) is done."""
    joined = load_joined(config_a, config_b)
    items = joined.training.items
    if items is None or not items.categorical:
        raise ValueError(f"{config_a}: the audit's labels need an item table with a categorical column")
    category = items.categorical[0]
    names = sorted(set(read_table(items.path, [items.id_column, category], [category])[category].astype(str)))
    spec = party_b_config.load(config_b).users.table
    b = joined.b_features
    return Parties(joined, a_own(joined.data), feature_matrix(b), a_labels(joined.data, names),
                   Columns(list(spec.numeric), b.numeric.astype(np.float64), list(spec.categorical), b.categorical))

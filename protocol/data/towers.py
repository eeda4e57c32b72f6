"""Torch building blocks both parties' towers use (the parties may not import each other)."""

from __future__ import annotations

import torch
from torch import nn

from protocol.data.tables import Features


def mlp(inputs: int, hidden: list[int], outputs: int) -> nn.Sequential:
    """Linear layers with ReLU between them; no activation after the last."""
    layers: list[nn.Module] = []
    width = inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def category_embedding(codes: int, other: bool, feature_dim: int) -> nn.Embedding:
    """A categorical column's embedding: one row per level, drawn as nn.Embedding draws them, then (`other`) the
    "other" level's row, which starts at zero and draws nothing, so a column whose levels are all frequent starts
    exactly as it did before "other" existed; the width is the levels', at most `feature_dim`."""
    levels = codes - other
    weight = nn.init.normal_(torch.empty(levels, min(feature_dim, max(levels, 1))))
    if other:
        weight = torch.cat([weight, torch.zeros(1, weight.shape[1])])
    return nn.Embedding(codes, weight.shape[1], _weight=weight)


class FeatureTower(nn.Module):
    """An optional ID embedding, embedded categorical columns and numeric columns, through an MLP."""

    def __init__(self, features: Features, outputs: int, hidden: list[int], feature_dim: int,
                 ids: int = 0, id_dim: int = 0):
        super().__init__()
        self.features = features
        self.id_embedding = nn.Embedding(ids, id_dim) if ids and id_dim else None
        self.embeddings = nn.ModuleList(category_embedding(c, features.has_other(j), feature_dim)
                                        for j, c in enumerate(features.cardinalities))
        width = features.numeric.shape[1] + sum(e.embedding_dim for e in self.embeddings)
        width += id_dim if self.id_embedding is not None else 0
        if width == 0:
            raise ValueError("a tower needs an ID embedding or at least one feature column")
        self.mlp = mlp(width, hidden, outputs)
        self.numeric = torch.from_numpy(features.numeric)
        self.categorical = torch.from_numpy(features.categorical)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        parts = [self.numeric[rows]]
        parts += [emb(self.categorical[rows, j]) for j, emb in enumerate(self.embeddings)]
        if self.id_embedding is not None:
            parts.append(self.id_embedding(rows))
        return self.mlp(torch.cat(parts, dim=1))

"""Tower B: B's user columns to e_B in (-1, 1)^d, one row per user.

The tanh bound is what makes |e_B| ≤ 1 a fact rather than a hope, so the packed
slots of [u] and [∇W] can be sized without ever seeing e_B.
"""

from __future__ import annotations

import torch
from torch import nn

from protocol.data.tables import Features
from protocol.data.towers import FeatureTower


class TowerB(nn.Module):
    def __init__(self, features: Features, d: int, hidden: list[int], feature_dim: int):
        super().__init__()
        self.tower = FeatureTower(features, d, hidden, feature_dim)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.tower(users))


def passive_step(optimizer: torch.optim.Optimizer, e_b: torch.Tensor, g: torch.Tensor) -> None:
    """Back-propagate ∂L/∂e_B = g through tower B and update it."""
    optimizer.zero_grad()
    e_b.backward(g)
    optimizer.step()

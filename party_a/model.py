"""Party A's model: tower A, the bias b of the interactive layer, and the top model.

Tower A is a user part (user-ID embedding and A's user columns) plus an item part
(item-ID embedding and item columns): e_A = a_user + v_item, width h. With
z = e_A + u + b the top model is an MLP on [z, z⊙z]. The square's cross terms hold
the products of a_user, v_item and u slot by slot, so B's contribution u meets the
item through a learnt weighted dot product instead of having to be discovered by
the MLP alone. A learnt per-item bias added to the logit lets popularity, the
strongest single signal in implicit feedback, count from the first step: it starts
at the log of each item's training count (A's own data), which Adam's bounded step
size would otherwise take many epochs to reach.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from party_a.config import ModelSettings
from party_a.data import ActiveData
from protocol.data.towers import FeatureTower, mlp


class ActiveModel(nn.Module):
    def __init__(self, data: ActiveData, s: ModelSettings):
        super().__init__()
        torch.manual_seed(s.seed)
        self.user_part = FeatureTower(data.user_features, s.h, list(s.tower_hidden), s.feature_dim,
                                      ids=data.n_users, id_dim=s.id_dim)
        self.item_part = FeatureTower(data.item_features, s.h, list(s.tower_hidden), s.feature_dim,
                                      ids=data.n_items, id_dim=s.id_dim)
        self.item_bias = nn.Embedding(data.n_items, 1)
        counts = np.bincount(np.concatenate([np.empty(0, np.int64), *data.train]), minlength=data.n_items)
        prior = np.log1p(counts)
        with torch.no_grad():
            self.item_bias.weight.copy_(torch.from_numpy(prior - prior.mean()).float().unsqueeze(1))
        self.bias = nn.Parameter(torch.zeros(s.h))
        self.top = mlp(2 * s.h, list(s.top_hidden), 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Logits for (user, item) rows; `u` holds B's contribution for each row's user."""
        z = self.user_part(users) + self.item_part(items) + u + self.bias
        return (self.top(torch.cat([z, z * z], dim=1)) + self.item_bias(items)).squeeze(1)


def active_step(model: ActiveModel, optimizer: torch.optim.Optimizer, users: torch.Tensor, items: torch.Tensor,
                labels: torch.Tensor, rows_user: torch.Tensor, u: torch.Tensor) -> tuple[float, torch.Tensor]:
    """One update of A's model; returns the loss and δ = ∂L/∂u (one row per user of the batch)."""
    u = u.detach().requires_grad_(True)
    logits = model(users[rows_user], items, u[rows_user])
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), u.grad

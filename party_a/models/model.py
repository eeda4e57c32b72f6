"""Party A's model: tower A, the bias b of the interactive layer, and the scorer.

User side: the user's history (its `history` most recent training items), embedded
and pooled with a learnt recency decay, and its latest item on its own, mixed to
width h, plus A's user columns through a tower: z = e_A + b. Item side: item ID and
item columns through a tower, v_j. B's contribution u (width h) meets its own item
vectors q_j (a second item tower), weighted by how many items the user has before
the target, c: ω(c) = exp(a + b·log(1 + c)). The logit of item j is

    z · v_j + ω(c) · u · q_j + bias_j + c₁ · Σ_{i in history} S[i, j] + c₂ · S[latest, j],

with S A's own EASE weights (party_a.models.baselines, λ chosen on validation) and c₁, c₂
learnt. This hybrid starts (user side at zero, c₂ = 0) as EASE with a popularity
prior: the item bias starts at w · log(1 + the item's training count), w chosen on
validation (`chosen_prior_weight`; how much popularity adds to EASE differs from one
data set to the next, and w stays 0 unless a weight beats EASE significantly). A
alone trains from there with u = 0 and is offered as it starts (epoch 0); a trained
epoch replaces the start only when significantly better on validation.

The federated model starts as A alone at its chosen epoch (party_a/training/alone.py), with
q_j = 0: the same prior, λ and weights, and B's contribution a residual that enters
only as far as training finds it useful. It learns only the q_j and ω (A's own part
stays A alone's, which early stopping already judged); q_j = 0 also makes δ = 0 at
the first step, then δ and B's tower follow. ω lets B's columns count for more where
A knows little (cold users) and for less where A's own events say enough. Its start
is offered as its epoch 0, so the federated model is never worse than A alone on
validation, by construction. `u · q_j` is scored as one dot product with z: the
user side returns [z, ω·u] and the item side [v_j, q_j].

Training predicts each sampled item of a user's history from the items before it
(as evaluation predicts the held-out item from all of them), with a softmax over
the whole catalogue in which the user's other training items are masked out. For
those targets S is recomputed without the user's own row of X (Sherman-Morrison on
P, per user), so a training target is scored as a held-out item is, by statistics
it did not shape; with S fitted on the same rows the model learns to over-trust it.
The loss is averaged per user first, so every user weighs the same in a step
whatever its activity. The δ = ∂L/∂u rows sent to B are rescaled to one norm per
batch (`equal_norms`): B's tower and W learn from each user's direction, and the
norm of g says nothing about how many events a user has at A.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from party_a.models.baselines import TrainingRows, ease_weights, gram, popularity
from party_a.config import ModelSettings
from party_a.models.evaluate import EvalSet, per_user
from party_a.data.tables import ActiveData
from party_a.data.sampler import PAD, Batch, pad_histories
from party_a.models.scoring import SCALE_GAIN, Catalogue, catalogue_logits
from party_a.data.segments import segment_labels
from party_a.models.selection import preferred
from protocol.data.towers import FeatureTower

PRIOR_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0)  # the popularity prior's weights A alone tries (0: EASE alone)


class ActiveModel(nn.Module):
    def __init__(self, data: ActiveData, s: ModelSettings, ease_lambda: float | None = None,
                 prior_weight: float = 1.0):
        """`ease_lambda`: EASE's λ chosen on validation (party_a.models.baselines); s.item_item_lambda if None.
        `prior_weight`: the weight of the popularity prior in the starting item bias."""
        super().__init__()
        torch.manual_seed(s.seed)
        n = data.n_items
        self.history_length = s.history
        self.item_part = FeatureTower(data.item_features, s.h, list(s.tower_hidden), s.feature_dim,
                                      ids=n, id_dim=s.id_dim)
        has_columns = data.user_features.numeric.shape[1] + len(data.user_features.cardinalities) > 0
        self.user_part = FeatureTower(data.user_features, s.h, list(s.tower_hidden), s.feature_dim) \
            if has_columns else None
        self.history_embedding = nn.Embedding(n + 1, s.h, padding_idx=n)  # row n: padding
        self.recency = nn.Parameter(torch.tensor(-2.0))  # decay per position, softplus(recency)
        self.mix = nn.Linear(2 * s.h, s.h)
        self.bias = nn.Parameter(torch.zeros(s.h))
        # q_j: what B's u says of item j, zero until training finds it (a tower like the item side's, its own weights)
        self.partner_items = FeatureTower(data.item_features, s.h, list(s.tower_hidden), s.feature_dim,
                                          ids=n, id_dim=s.id_dim)
        with torch.no_grad():  # the user side starts at zero: the model starts as A's item-item scores
            for layer in [self.mix, self.partner_items.mlp[-1]] + \
                    ([self.user_part.mlp[-1]] if self.user_part is not None else []):
                layer.weight.zero_()
                layer.bias.zero_()
        # how much u counts for a user with c items before the target: exp(a + b·log(1 + c)), learnt from a = b = 0
        self.partner_weight = nn.Parameter(torch.zeros(2))
        rows = TrainingRows(data)
        prior = prior_weight * np.log1p(popularity(rows, n))
        self.item_bias = nn.Parameter(torch.from_numpy(prior - prior.mean()).float())
        self.register_buffer("p", None)  # the EASE part's P, when there is one
        if s.item_item:
            self.add_item_item(data, s.item_item_lambda if ease_lambda is None else ease_lambda, rows)

    def add_item_item(self, data: ActiveData, lam: float, rows: Iterable[np.ndarray]) -> None:
        """The EASE part of the scorer: P = (XᵀX + λI)⁻¹ (n × n, so only for catalogues that fit) and c₁, c₂."""
        n = data.n_items
        p = np.linalg.inv(gram(rows, n) + lam * np.eye(n))  # EASE's P; B = I - P·diag(1/diag(P))
        self.register_buffer("p", torch.from_numpy(np.vstack([p, np.zeros((1, n))])).float())  # row n: padding
        self.register_buffer("p_diag", torch.from_numpy(np.diag(p).copy()).float())
        # c₁ counts in units of the spread of training histories' EASE scores, whatever λ made them
        b = ease_weights(p)
        spread = np.std([b[h].sum(0) for h in data.train[:512] if h.size] or [0.0])
        self.register_buffer("unit", torch.tensor(1.0 / spread if spread > 0 else 1.0, dtype=torch.float32))
        self.item_item_scale = nn.Parameter(torch.tensor(1.0 / SCALE_GAIN))
        self.latest_item_scale = nn.Parameter(torch.tensor(0.0))  # learns how much more the latest item counts

    def user_side(self, history: torch.Tensor, users: torch.Tensor, u: torch.Tensor,
                  targets: torch.Tensor | None = None,
                  earlier: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[z, u] (U, P, 2h) for each user from the history before each target position (training), or
        (U, 1, 2h) from the whole history (`targets` None); also the history as item indices (padding n) and the
        cuts. z pools the last `history_length` items; ω counts every item before the target, `earlier`'s too
        (training: the items before the window `history`)."""
        n = self.item_bias.shape[0]
        older = (history[:, :-self.history_length] != PAD).sum(1)
        if earlier is not None:
            older = older + (earlier != PAD).sum(1)
        items = torch.where(history != PAD, history, n)
        window = history[:, -self.history_length:]
        length = window.shape[1]
        filled = window != PAD
        cut = torch.full((len(history), 1), length) if targets is None else targets.clamp_min(0)
        position = torch.arange(length)
        keep = filled[:, None, :] & (position < cut[..., None])  # (U, P, L)
        age = (cut[..., None] - 1 - position).clamp_min(0)
        weight = torch.exp(-nn.functional.softplus(self.recency) * age) * keep
        embedded = self.history_embedding(torch.where(filled, window, n))  # (U, L, h)
        pooled = torch.einsum("upl,ulh->uph", weight, embedded) / weight.sum(-1, keepdim=True).clamp_min(1e-6)
        latest = torch.gather(embedded, 1, (cut - 1).clamp_min(0)[..., None].expand(-1, -1, embedded.shape[2]))
        latest = latest * keep.any(-1, keepdim=True)
        z = self.mix(torch.cat([pooled, latest], dim=-1)) + self.bias
        if self.user_part is not None:
            z = z + self.user_part(users)[:, None, :]
        a, b = self.partner_weight
        weight = torch.exp(a + b * torch.log1p((keep.sum(-1) + older[:, None]).float()))[..., None]  # (U, P, 1)
        return torch.cat([z, u[:, None, :] * weight], dim=-1), items, \
            torch.full((len(history), 1), history.shape[1]) if targets is None else cut

    def partner_parameters(self) -> list[nn.Parameter]:
        """What the federated model learns: the q_j and how much u counts by activity."""
        return [*self.partner_items.parameters(), self.partner_weight]

    def item_vectors(self) -> torch.Tensor:
        """[v_j, q_j] (n, 2h) for every item: a user's [z, u] scores item j by z·v_j + u·q_j."""
        items = torch.arange(self.item_bias.shape[0])
        return torch.cat([self.item_part(items), self.partner_items(items)], dim=-1)

    def catalogue(self) -> Catalogue:
        """The catalogue-wide part of the scorer (party_a/models/scoring.py)."""
        v = self.item_vectors()
        if self.p is None:
            return Catalogue(v, self.item_bias)
        return Catalogue(v, self.item_bias, self.p, self.p_diag, self.unit, self.item_item_scale,
                         self.latest_item_scale)

    def logits(self, history: torch.Tensor, users: torch.Tensor, u: torch.Tensor,
               targets: torch.Tensor | None = None, earlier: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (U, P, n) of every item for each user, from the history before each target position
        (training: `history` the recent window, `earlier` the items before it), or (U, 1, n) from the whole
        history (evaluation, `targets` None)."""
        z, items, cut = self.user_side(history, users, u, targets, earlier)
        n = self.item_bias.shape[0]
        older = None if earlier is None else torch.where(earlier != PAD, earlier, n)
        return catalogue_logits(self.catalogue(), z, items, cut, targets is not None, older)

    def score(self, histories: Sequence[np.ndarray], users: torch.Tensor, items: torch.Tensor,
              u: torch.Tensor) -> torch.Tensor:
        """Scores (users, C) of the listed items, each user from its whole history."""
        out = []
        for k in range(0, len(users), 64):  # bounded memory: (chunk, history, items) at a time
            part = slice(k, k + 64)
            history = torch.from_numpy(pad_histories([histories[i] for i in range(k, min(k + 64, len(users)))]))
            logits = self.logits(history, users[part], u[part])[:, 0, :]
            out.append(torch.gather(logits, 1, items[part]))
        return torch.cat(out)


def federated_start(alone: ActiveModel) -> ActiveModel:
    """The federated model as it starts: a copy of A alone in which only the q_j learn (q_j = 0: it scores as A
    alone)."""
    federated = copy.deepcopy(alone)
    for name, parameter in federated.named_parameters():
        parameter.requires_grad_(name.startswith("partner"))
    return federated


@torch.no_grad()
def model_scores(model: ActiveModel, ev: EvalSet, u: np.ndarray) -> np.ndarray:
    """Scores of the evaluation lists; `u` holds B's contribution per shared user (zeros for A alone)."""
    model.eval()
    scores = model.score(ev.histories, torch.from_numpy(ev.users), torch.from_numpy(ev.items),
                         torch.from_numpy(np.asarray(u, dtype=np.float32)[ev.users]))
    model.train()
    return scores.numpy()


def chosen_prior_weight(data: ActiveData, s: ModelSettings, ease_lambda: float, valid: EvalSet,
                        k: int) -> tuple[float, dict[float, float]]:
    """The popularity prior's weight (of PRIOR_WEIGHTS) whose starting model ranks the validation lists best
    (NDCG@k, u = 0), if it beats EASE alone (weight 0) significantly and on every activity segment's mean, else 0;
    and the validation NDCG@k of each weight tried."""
    ndcg = {}
    zeros = np.zeros((data.n_users, s.h), dtype=np.float32)
    for weight in PRIOR_WEIGHTS:
        ndcg[weight] = per_user(model_scores(ActiveModel(data, s, ease_lambda, weight), valid, zeros), k)[2]
    return float(preferred(ndcg, segment_labels(valid.activity))), {w: float(v.mean()) for w, v in ndcg.items()}


def active_step(model: ActiveModel, optimizer: torch.optim.Optimizer, batch: Batch,
                u: torch.Tensor) -> tuple[float, torch.Tensor]:
    """One update of A's model on a batch; returns the loss and δ = ∂L/∂u (one row per user of the batch)."""
    u = u.detach().requires_grad_(True)
    history, targets = torch.from_numpy(batch.history), torch.from_numpy(batch.targets)
    logits = model.logits(history, torch.from_numpy(batch.users), u, targets, torch.from_numpy(batch.earlier))
    n = logits.shape[2]
    used = targets != PAD
    wanted = torch.where(used, torch.gather(history, 1, targets.clamp_min(0)), 0)  # (U, P)
    every = torch.cat([history, torch.from_numpy(batch.earlier)], dim=1)  # the user's training items
    own = torch.zeros(len(history), n + 1, dtype=torch.bool).scatter_(1, torch.where(every != PAD, every, n), True)
    others = own[:, None, :n] & (torch.arange(n)[None, None, :] != wanted[:, :, None])
    logits = logits.masked_fill(others, float("-inf"))
    ce = nn.functional.cross_entropy(logits.reshape(-1, n), wanted.reshape(-1), reduction="none").view(used.shape)
    loss = (torch.where(used, ce, 0.0).sum(1) / used.sum(1).clamp_min(1)).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), equal_norms(u.grad)


def equal_norms(delta: torch.Tensor) -> torch.Tensor:
    """Each row rescaled to the batch's mean row norm, direction kept; a zero row gets a random direction.

    A user's gradient is a mean over its targets, so its norm shrinks as its history grows, and it is zero
    for a user without training items; sent as is, ‖δ‖ (and ‖g‖ = ‖δ·Wᵀ‖, which B decrypts) would tell B
    how active each user is at A."""
    norms = delta.norm(dim=1, keepdim=True)
    if not (norms > 0).any():
        return delta
    direction = torch.where(norms > 0, delta, torch.randn_like(delta))
    return direction * norms[norms > 0].mean() / direction.norm(dim=1, keepdim=True)

"""The catalogue-wide part of A's scorer, as plain functions of tensors: one code path for every caller.

A user's logits split into what needs A's model and data per user (z from
`ActiveModel.user_side`, and its history as item indices) and what is the same for
every user (the `Catalogue`: item vectors V, item biases, EASE's P and diag(P), and
the item-item coefficients; for a single-party baseline served to a segment, a
table of item-item weights summed over the history). `ActiveModel.logits`
(training, evaluation, the HTTP service) and the workers of `python -m party_a
recommend` all score through `catalogue_logits`, and the service and `recommend`
take top-k through `top_items`, so a user's scores are the same bits whichever path
scores it.

On a worker, `install` caches a model's catalogue (broadcast once per worker, as
arrays of our codec: raw bytes, dtype and shape, never pickled), and
`top_items_task` scores a chunk of users against it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

SCALE_GAIN = 10.0  # c₁ and c₂ are stored divided by this, so Adam's bounded steps move them 10 times faster


@dataclass(frozen=True)
class Catalogue:
    """What scoring needs of a model besides the user: V (n, h), item biases (n,), and, with the item-item part,
    P (n + 1, n; row n: padding), diag(P) (n,), its unit and c₁, c₂ (0-d); those are None without it.
    `neighbours` (n + 1, n; row n: zeros): item-kNN's weights, summed over the whole history (serving only)."""

    v: torch.Tensor
    item_bias: torch.Tensor
    p: torch.Tensor | None = None
    p_diag: torch.Tensor | None = None
    unit: torch.Tensor | None = None
    item_item_scale: torch.Tensor | None = None
    latest_item_scale: torch.Tensor | None = None
    neighbours: torch.Tensor | None = None

    def arrays(self) -> dict[str, np.ndarray | None]:
        """The tensors as NumPy arrays (sharing memory), to send to workers."""
        return {f.name: None if (t := getattr(self, f.name)) is None else t.detach().numpy() for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray | None]) -> "Catalogue":
        return cls(**{name: None if a is None else torch.from_numpy(a) for name, a in arrays.items()})


def bag(items: torch.Tensor, n: int) -> torch.Tensor:
    """(U, n + 1) counts of each item in each row of `items` (padding n, counted in the last column)."""
    return torch.zeros(len(items), n + 1).scatter_add_(1, items, torch.ones(items.shape))


def item_item(p: torch.Tensor, p_diag: torch.Tensor, items: torch.Tensor, cut: torch.Tensor, training: bool,
              earlier: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """EASE scores (U, P, n) of every item from each user's history before `cut`, and from its latest item.

    `items` is the history (padding n). Outside training it is the whole history and `cut` its end. In
    training it is the recent window the targets are drawn from, and `earlier` (U, E; padding n) the user's
    items before it: they count towards every target's history, and the user's whole row is taken out of
    XᵀX (Sherman-Morrison on P), so a target is scored as a held-out item is: by statistics it did not shape.
    Entries for the user's own items are not meaningful (never candidates; the loss masks them)."""
    n = p_diag.shape[0]
    if not training:  # the whole history, as EASE scores it: one product, whatever its length
        return -(bag(items, n) @ p)[:, None, :] / p_diag, -p[items[:, -1:]] / p_diag
    older = bag(earlier, n)[:, :n] if earlier is not None else torch.zeros(len(items), n)
    rows = p[items]  # (U, L, n)
    before = (cut - 1).clamp_min(0)  # (U, P): the latest position used
    has = (cut > 0)[..., None]
    old = older @ p[:n]  # (U, n)
    prefix = torch.gather(rows.cumsum(1), 1, before[..., None].expand(-1, -1, n)) * has + old[:, None, :]
    latest = p[torch.gather(items, 1, before)] * has
    px = rows.sum(1) + old  # (U, n): (P x)ᵀ for the user's row x
    at = torch.gather(px, 1, items.clamp_max(n - 1)) * (items < n)  # (U, L): (P x)_i per position
    at_old = (older * px).sum(1)  # (U,): Σ (P x)_i over the items before the window
    c = (1 - at.sum(1) - at_old)[:, None, None]  # 1 - xᵀPx > 0
    prefix = prefix + (torch.gather(at.cumsum(1), 1, before) * has[..., 0] + at_old[:, None])[..., None] \
        * px[:, None, :] / c
    latest = latest + (torch.gather(at, 1, before) * has[..., 0])[..., None] * px[:, None, :] / c
    diag = p_diag + px[:, None, :] ** 2 / c
    return -prefix / diag, -latest / diag


def item_item_term(c: Catalogue, items: torch.Tensor, cut: torch.Tensor, training: bool,
                   earlier: torch.Tensor | None = None) -> torch.Tensor | float:
    """c₁ · Σ_history S[i, j] + c₂ · S[latest, j] per item (0 without the item-item part)."""
    if c.p is None:
        return 0.0
    whole, last = item_item(c.p, c.p_diag, items, cut, training, earlier)
    return c.unit * SCALE_GAIN * (c.item_item_scale * whole + c.latest_item_scale * last)


def catalogue_logits(c: Catalogue, z: torch.Tensor, items: torch.Tensor, cut: torch.Tensor, training: bool,
                     earlier: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (U, P, n) of every item: z · Vᵀ + item bias + the item-item term of the history before `cut`
    (in training, `earlier` the items before the window `items`; see `item_item`)."""
    logits = z @ c.v.T + c.item_bias + item_item_term(c, items, cut, training, earlier)
    return logits if c.neighbours is None else logits + c.neighbours[items].sum(-2)[:, None, :]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (ties: lower index first)."""
    k = min(k, scores.size)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


def baseline_catalogue(width: int, item_bias: np.ndarray, neighbours: np.ndarray | None = None) -> Catalogue:
    """A single-party baseline as a catalogue that ignores z (of `width`): popularity (`item_bias`: the
    training counts) or item-kNN (`neighbours`: its item-item weights, n × n)."""
    n = item_bias.shape[0]
    padded = None if neighbours is None else torch.from_numpy(
        np.vstack([neighbours, np.zeros((1, n))]).astype(np.float32))
    return Catalogue(torch.zeros(n, width), torch.from_numpy(item_bias.astype(np.float32)), neighbours=padded)


@torch.no_grad()
def top_items(c: Catalogue, z: torch.Tensor, items: torch.Tensor, bought: np.ndarray | None,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """One user's top-k item indices and their scores (float32), from z (h,) and its history as item indices
    (L,; padding n), scored from the whole history; `bought` (None: keep them) are left out, scored -inf."""
    cut = torch.full((1, 1), items.shape[0])
    scores = catalogue_logits(c, z[None, None, :], items[None, :], cut, False)[0, 0].numpy()
    if bought is not None and bought.size:
        scores = scores.copy()
        scores[bought] = -np.inf
    top = top_k(scores, k)
    return top, scores[top]


_installed: dict[tuple[str, str], Catalogue] = {}  # a worker's catalogues, by (model ID, model name)


def install(model_id: str, name: str, arrays: dict[str, np.ndarray | None]) -> None:
    """A worker's side: keep model `model_id`'s catalogue `name` (the last model's only) and score on one
    thread, as `recommend` and the service do."""
    for key in [key for key in _installed if key[0] != model_id]:
        del _installed[key]
    _installed[(model_id, name)] = Catalogue.from_arrays(arrays)
    torch.set_num_threads(1)


def top_items_task(model_id: str, names: list[str], z: np.ndarray, items: list[np.ndarray],
                   bought: list[np.ndarray], k: int, include_bought: bool) -> list[np.ndarray]:
    """A worker's side: `top_items` for a chunk of users, user i by the installed catalogue `names[i]`, from
    z (U, h), its items (its whole history) and its bought items (not
    sent with `include_bought`); [indices (U, k), scores (U, k)] (k at most the catalogue)."""
    tops, scores = [], []
    for i, name in enumerate(names):
        catalogue = _installed.get((model_id, name))
        if catalogue is None:
            raise ValueError(f"no catalogue {name!r} of model {model_id!r} was installed on this worker")
        top, score = top_items(catalogue, torch.from_numpy(z[i]), torch.from_numpy(items[i]),
                               None if include_bought else bought[i], k)
        tops.append(top)
        scores.append(score)
    return [np.stack(tops), np.stack(scores)]

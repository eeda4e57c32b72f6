"""The Gaussian mechanism on per-user rows, and its accountant (docs/security.md).

A party that switches its defence on ([privacy] in its config) releases, per user
and step, one row through `gaussian_rows`: the row bounded to norm `clip`, plus
independent N(0, (σ·clip)²) noise per coordinate, then clamped to the fixed-point
range (post-processing). Replacing one user's data moves that user's bounded row
by at most 2·clip, so each release is a Gaussian mechanism with noise multiplier
σ/2 with respect to that sensitivity, and a user's releases compose over the run.

No amplification by subsampling: the other party is told which users each step is
about, so every release is known to concern its user. `epsilon` takes a sampling
rate only so that its figure can be compared with the library's for one.

What the ε covers: the released rows of a user, each a function of that user's own
data and of the releasing party's model. A user's data also shapes that model (A's
model trains on clean gradients, tower B on its clean columns), and so the rows of
other users released later; that path is not covered (it would take DP-SGD on the
models themselves).

No noise is drawn twice: with a release ledger (protocol/store/releases.py) each
release is on disk before its rows leave, a resume never rewinds the counts or the
generator, and a step redone after a resume re-sends the rows it released. A user
whose next release would pass `max_epsilon` is refused it.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from dataclasses import dataclass

import numpy as np

from protocol import observe
from protocol.errors import ProtocolError
from protocol.settings.config import Table
from protocol.store.releases import ReleaseLedger, Released, apply_record, release_record

REPLACE_SENSITIVITY = 2.0  # replacing a user's data moves its bounded row by at most 2·clip


@dataclass(frozen=True)
class RowPrivacy:
    """[privacy] in a party's config: the rows it releases per user clipped to norm `clip` and blurred with
    noise multiplier σ; off at σ = 0, the default. `max_epsilon`: the most ε any user's releases may spend (None:
    no budget; set only with noise on)."""

    clip: float = 1.0
    noise_multiplier: float = 0.0
    dp_delta: float = 1e-5
    seed: int | None = None  # None: noise from the OS; a seed only for experiments that replay a run
    max_epsilon: float | None = None

    @property
    def on(self) -> bool:
        return self.noise_multiplier > 0

    def max_releases(self) -> int | None:
        """The most releases of one user whose ε stays within `max_epsilon` (None: no budget)."""
        if self.max_epsilon is None:
            return None
        budget = self.max_epsilon

        def fits(releases: int) -> bool:
            return epsilon(self.noise_multiplier, releases, self.dp_delta) <= budget

        low, high = 0, 1
        while fits(high):
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        return low


def read_privacy(root: Table, what: str) -> RowPrivacy:
    """[privacy]: the party's noise on `what` it releases, off unless noise_multiplier > 0."""
    t = root.sub("privacy")
    d = RowPrivacy()
    settings = RowPrivacy(clip=t.take_positive("clip", float, d.clip),
                          noise_multiplier=t.take("noise_multiplier", float, d.noise_multiplier),
                          dp_delta=t.take_positive("dp_delta", float, d.dp_delta), seed=t.take("seed", int, None),
                          max_epsilon=t.take("max_epsilon", float, None))
    t.finish()
    if settings.noise_multiplier < 0:
        raise t.error("noise_multiplier", f"must be 0 (no noise on {what}) or more")
    if settings.dp_delta >= 1:
        raise t.error("dp_delta", f"must be below 1, got {settings.dp_delta}")
    if settings.max_epsilon is not None and settings.max_epsilon <= 0:
        raise t.error("max_epsilon", f"must be positive, got {settings.max_epsilon}")
    if settings.max_epsilon is not None and not settings.on:
        raise t.error("max_epsilon", f"needs noise_multiplier > 0: without noise on {what} one release spends ε = ∞")
    return settings


def release_key(label: str) -> str:
    """The step a label names, whatever its generation: a step redone after a resume has the key it first had."""
    return re.sub(r"/g\d+$", "", label)


class RowNoise:
    """A party's released rows through the Gaussian mechanism, each user's releases counted for its ε.

    `scale` takes a row to the scale at which it is clipped (and back after); `normalise` sets every row to
    norm `clip` instead of at most `clip`; `bound` is the clamp the fixed-point encoding applies anyway.

    Noise is never drawn twice. With a `ledger` (protocol/store/releases.py) each release is on disk before
    its rows are returned, and a RowNoise built on the same file goes on from it: its counts, each user's last row
    (to send `again`, or to re-send for a step redone under the same `key`) and, for a seeded run only, the
    generator's state. A user's row for a `key` it was last released under is the released row itself, whatever
    the row passed in now (post-processing: it spends nothing, and a peer that changed its own input after a
    resume learns nothing new). A release that would take a user past `max_epsilon` is refused."""

    def __init__(self, settings: RowPrivacy, bound: float, scale: float = 1.0, normalise: bool = False,
                 ledger: ReleaseLedger | None = None):
        self.settings, self.bound, self.scale, self.normalise = settings, bound, scale, normalise
        self.ledger = ledger
        self.held = ledger.state if ledger is not None else Released()
        self.rng = noise_rng(settings.seed)
        if settings.seed is not None and self.held.rng is not None:
            self.rng.bit_generator.state = self.held.rng
        self.limit = settings.max_releases()
        observe.spending(lambda: self.spent()["epsilon"])

    @property
    def releases(self) -> Counter[int]:
        """Each user's releases so far."""
        return self.held.counts

    def __call__(self, users: np.ndarray, rows: np.ndarray, key: str | None = None) -> np.ndarray:
        """The rows of `users` as released: the row already released for `key` where there is one, else a
        fresh release, counted and written to the ledger before this returns."""
        users = [int(u) for u in users]
        rows = np.asarray(rows, dtype=np.float64)
        out = np.empty(rows.shape)
        fresh = []
        for i, u in enumerate(users):
            last = self.held.last.get(u)
            if key is not None and last is not None and last[0] == key:
                out[i] = last[1]
            else:
                fresh.append(i)
        if fresh:
            who = [users[i] for i in fresh]
            self.check(who)
            s = self.settings
            out[fresh] = gaussian_rows(rows[fresh] * self.scale, s.clip, s.noise_multiplier, self.bound, self.rng,
                                       self.normalise) / self.scale
            rng = self.rng.bit_generator.state if s.seed is not None else None
            record = release_record(key, who, out[fresh], rng)
            if self.ledger is not None:
                self.ledger.append(record)
            else:
                apply_record(self.held, record)
            observe.released(len(fresh))
        return out

    def check(self, users: list[int]) -> None:
        """Refuse (ProtocolError) one more release of `users` if it would take any of them past the budget."""
        if self.limit is None:
            return
        over = [u for u in users if self.held.counts[u] + 1 > self.limit]
        if over:
            s = self.settings
            raise ProtocolError(
                f"refused: one more release would take {len(over)} users past the privacy budget ([privacy] "
                f"max_epsilon = {s.max_epsilon:g}): {self.limit + 1} releases spend ε = "
                f"{epsilon(s.noise_multiplier, self.limit + 1, s.dp_delta):.3f} at δ = {s.dp_delta:g}, "
                f"{self.limit} at most fit")

    def again(self, users: np.ndarray) -> np.ndarray | None:
        """The rows last released for `users`, None unless every one of them has been released: sending a
        released row again is post-processing, and spends nothing."""
        if any(int(u) not in self.held.last for u in users):
            return None
        return np.stack([self.held.last[int(u)][1] for u in users])

    def spent(self) -> dict:
        """The defence's settings, the most releases of any one user, and the ε they spend."""
        return spent(self.settings, max(self.releases.values(), default=0))

    def state(self) -> dict:
        """What a checkpoint keeps (JSON): the releases per user, a floor for the ledger's counts. The rows and
        the generator are the ledger's alone, so that no restore can rewind them."""
        return {"releases": [[u, c] for u, c in sorted(self.releases.items())]}

    def restore(self, state: dict) -> None:
        """Raise each user's count to what a checkpoint held, if the ledger counts fewer (it was lost): counts
        never go down, and nothing else is taken back."""
        raised = [[int(u), int(c)] for u, c in state["releases"] if int(c) > self.releases[int(u)]]
        if not raised:
            return
        if self.ledger is not None:
            self.ledger.append({"floor": raised})
        else:
            apply_record(self.held, {"floor": raised})


def spent(settings: RowPrivacy, releases: int) -> dict:
    """The defence's settings, a user's releases and the ε they spend (ε null without a defence)."""
    s = settings
    return {"clip": s.clip, "noise_multiplier": s.noise_multiplier, "dp_delta": s.dp_delta,
            "releases_per_user": releases, "epsilon": epsilon(s.noise_multiplier, releases, s.dp_delta) if s.on
            else None}


def noise_rng(seed: int | None) -> np.random.Generator:
    """The generator of a party's noise: seeded for reproducible experiments, else from the OS."""
    return np.random.default_rng(secrets.randbits(128) if seed is None else seed)


def gaussian_rows(rows: np.ndarray, clip: float, noise_multiplier: float, bound: float, rng: np.random.Generator,
                  normalise: bool = False) -> np.ndarray:
    """Each row scaled to norm `clip` (`normalise`) or to at most `clip`, plus N(0, (noise_multiplier·clip)²)
    per coordinate, clamped to ±`bound`. A zero row to be normalised gets a random direction."""
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if normalise:
        zero = (norms == 0)[:, 0]
        rows = rows.copy()
        rows[zero] = rng.standard_normal((int(zero.sum()), rows.shape[1]))
        scale = clip / np.linalg.norm(rows, axis=1, keepdims=True)
    else:
        scale = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    noisy = rows * scale + rng.standard_normal(rows.shape) * (noise_multiplier * clip)
    return np.clip(noisy, -bound, bound)


def _event(noise_multiplier: float, releases: int, sampling_rate: float):
    import dp_accounting

    one = dp_accounting.GaussianDpEvent(noise_multiplier / REPLACE_SENSITIVITY)
    if sampling_rate < 1.0:
        one = dp_accounting.PoissonSampledDpEvent(sampling_rate, one)
    return dp_accounting.SelfComposedDpEvent(one, releases)


def epsilon(noise_multiplier: float, releases: int, dp_delta: float, sampling_rate: float = 1.0) -> float:
    """ε of `releases` Gaussian releases of one user's row (RDP accountant of Google's dp-accounting);
    inf without noise, 0 without releases."""
    if releases == 0:
        return 0.0
    if noise_multiplier <= 0:
        return float("inf")
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant()
    accountant.compose(_event(noise_multiplier, releases, sampling_rate))
    return float(accountant.get_epsilon(dp_delta))


def noise_for_epsilon(target: float, releases: int, dp_delta: float) -> float:
    """The smallest noise multiplier (to 0.1 %) whose `releases` releases spend at most `target`."""
    low, high = 1e-2, 1.0
    while epsilon(high, releases, dp_delta) > target:
        low, high = high, high * 2
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if epsilon(mid, releases, dp_delta) > target else (low, mid)
    return high

"""Early stopping picks the best validation epoch and stops after `patience` epochs without improvement; a trained
epoch replaces the start only when it beats it significantly over the validation users."""

from __future__ import annotations

import numpy as np

from party_a.models.selection import EarlyStopping, preferred


def run(curve: list[float], stopper: EarlyStopping) -> list[bool]:
    """Feed the curve epoch by epoch as a training loop would, every user at the epoch's value (so any gain is
    sure); returns the 'best so far' flags seen."""
    flags = []
    for value in curve:
        flags.append(stopper.update(np.full(100, value)))
        if stopper.should_stop():
            break
    return flags


def test_picks_the_best_epoch_and_stops_after_patience() -> None:
    stopper = EarlyStopping(patience=3)
    flags = run([0.20, 0.25, 0.31, 0.30, 0.33, 0.32, 0.329, 0.31, 0.40, 0.41], stopper)
    assert flags == [True, True, True, False, True, False, False, False]  # stops at epoch 8, never sees 0.40
    choice = stopper.choice()
    assert (choice.epoch, choice.value) == (5, 0.33)
    assert "epoch 5 of 8" in choice.reason and "3 epochs without improvement" in choice.reason


def test_a_gain_below_min_delta_is_not_an_improvement() -> None:
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    run([0.30, 0.305, 0.309, 0.5], stopper)
    assert stopper.choice().epoch == 1 and len(stopper.history) == 3


def test_without_stopping_the_last_epoch_is_reported_as_reached() -> None:
    stopper = EarlyStopping(patience=5)
    run([0.1, 0.3, 0.2], stopper)
    choice = stopper.choice()
    assert choice.epoch == 2 and "last epoch reached, 1 epochs after the best" in choice.reason


def test_the_starting_model_is_epoch_zero_and_can_be_chosen() -> None:
    stopper = EarlyStopping(patience=2, first=0)
    run([0.40, 0.38, 0.37, 0.36, 0.45], stopper)
    choice = stopper.choice()
    assert choice.epoch == 0 and len(stopper.history) == 4
    assert "epoch 0 (the starting model" in choice.reason and "of 3" in choice.reason


def test_training_still_improving_below_the_start_is_not_stopped() -> None:
    stopper = EarlyStopping(patience=2, first=0)
    flags = run([0.40, 0.30, 0.32, 0.34, 0.36, 0.41, 0.39, 0.38, 0.5], stopper)
    assert flags == [True, False, False, False, False, True, False, False]  # stops 2 epochs after epoch 5
    assert stopper.choice().epoch == 5


def test_a_gain_over_the_start_within_the_noise_keeps_the_start() -> None:
    """Per-user values whose mean rises by 0.01 while the users' differences spread by 0.3: noise on 400 users
    (standard error 0.015), so the start stays chosen; the same rise with a spread of 0.05 is sure, and is chosen."""
    rng = np.random.default_rng(0)
    start = rng.uniform(0, 1, 400)
    noise = rng.normal(0, 1, 400)
    noise = (noise - noise.mean()) / noise.std(ddof=1)
    for spread, chosen in ((0.3, 0), (0.05, 1)):
        stopper = EarlyStopping(patience=2, first=0)
        flags = [stopper.update(start), stopper.update(start + 0.01 + spread * noise)]
        assert flags == [True, chosen == 1] and stopper.choice().epoch == chosen
        assert stopper.history[1] > stopper.history[0]  # the mean did rise
        assert ("no epoch of training beat it significantly" in stopper.choice().reason) == (chosen == 0)


def test_without_the_start_the_best_mean_is_chosen() -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(0, 1, 50)
    stopper = EarlyStopping(patience=2)
    assert stopper.update(values) and stopper.update(values + 0.3 * rng.normal(size=50) + 0.05)
    assert stopper.choice().epoch == 2


def test_a_sure_gain_that_costs_one_segment_keeps_the_start() -> None:
    """Three segments of 100 users: an epoch gains 0.05 on two and loses 0.01 on the third, surely better on the
    whole; with the segments given, the start is kept (the users who lose are not served worse), without them the
    epoch is chosen. Losing nothing on the third, it is chosen either way."""
    start = np.linspace(0.2, 0.6, 300)
    groups = np.repeat([0, 1, 2], 100)
    for third, segments, chosen in ((-0.01, groups, 0), (-0.01, None, 1), (0.0, groups, 1)):
        stopper = EarlyStopping(patience=2, first=0)
        stopper.update(start, segments)
        stopper.update(start + np.where(groups == 2, third, 0.05), segments)
        assert stopper.choice().epoch == chosen, (third, segments is None)


def test_a_prior_weight_or_segment_scorer_is_preferred_only_if_it_costs_no_segment() -> None:
    base = np.linspace(0.2, 0.6, 300)
    groups = np.repeat([0, 1, 2], 100)
    other = base + np.where(groups == 0, -0.02, 0.06)
    assert preferred({"first": base, "other": other}) == "other"
    assert preferred({"first": base, "other": other}, groups) == "first"

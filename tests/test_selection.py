"""Early stopping picks the best validation epoch and stops after `patience` epochs without improvement."""

from __future__ import annotations

from party_a.selection import EarlyStopping


def run(curve: list[float], stopper: EarlyStopping) -> list[bool]:
    """Feed the curve epoch by epoch as a training loop would; returns the 'best so far' flags seen."""
    flags = []
    for value in curve:
        flags.append(stopper.update(value))
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

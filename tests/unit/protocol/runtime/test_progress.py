"""Progress off a terminal: whole lines at most one per interval and a last one, never a carriage return."""

from __future__ import annotations

import io

import pytest

from protocol.observe import REGISTRY
from protocol.runtime import progress


class Clock:
    """time.monotonic, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    monkeypatch.setattr(progress, "LINE_SECONDS", 30.0)
    return fake


def test_a_log_gets_a_line_per_interval_and_a_last_one_without_carriage_returns(clock: Clock) -> None:
    log = io.StringIO()
    bar = progress.progress_bar(total=100, task="epoch", desc="epoch 1/12", unit="batch", file=log, leave=False)
    for step in range(100):  # 100 steps of 1.5 s: 150 s
        clock.now += 1.5
        bar.update()
        bar.set_postfix(loss=f"{step:.4f}")
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert 2 <= len(lines) <= 150 // 30 + 2, lines  # the first, one per 30 s, the last
    assert lines[0].startswith("epoch 1/12: 0/100 batch") and lines[-1].startswith("epoch 1/12: 100/100 batch (100 %)")
    assert "left" in lines[-1] and "loss=99.0000" in lines[-1]


def test_an_iterable_ends_with_its_total_and_a_disabled_bar_writes_nothing(clock: Clock) -> None:
    log = io.StringIO()
    shown = progress.progress_bar(range(5), task="a_alone", desc="A alone", unit="epoch", file=log)
    assert list(shown) == list(range(5))
    assert log.getvalue().splitlines()[-1].startswith("A alone: 5/5 epoch (100 %)")
    open_ended = io.StringIO()
    for _ in progress.progress_bar((batch for batch in range(3)), task="refresh", desc="refresh", unit="batch",
                                   file=open_ended):
        pass
    assert open_ended.getvalue().splitlines()[-1].startswith("refresh: 3 batch, ")
    assert "%" not in open_ended.getvalue() and "left" not in open_ended.getvalue()
    quiet = io.StringIO()
    assert list(progress.progress_bar(range(5), task="a_alone", desc="A alone", file=quiet,
                                      enabled=False)) == list(range(5))
    assert quiet.getvalue() == ""


def test_a_terminal_gets_tqdms_bar() -> None:
    screen = Terminal()
    for _ in progress.progress_bar(range(3), task="psi", desc="PSI", file=screen, mininterval=0):
        pass
    assert "\r" in screen.getvalue()


def done_and_total(task: str) -> tuple[float | None, float | None]:
    return tuple(REGISTRY.get_sample_value(f"vfrec_progress_{what}", {"task": task}) for what in ("done", "total"))


@pytest.mark.parametrize("out", [io.StringIO(), Terminal()], ids=["log", "terminal"])
@pytest.mark.parametrize("enabled", [True, False], ids=["shown", "hidden"])
def test_every_step_reaches_the_metrics_shown_or_not(out: io.StringIO, enabled: bool) -> None:
    bar = progress.progress_bar(total=40, initial=10, task="psi", desc="PSI", file=out, enabled=enabled)
    assert done_and_total("psi") == (10, 40)
    for n in range(1, 6):
        bar.update(3)
        assert done_and_total("psi") == (10 + 3 * n, 40)
    bar.close()
    seen = []
    for _ in progress.progress_bar((i for i in range(4)), task="refresh", desc="refresh", file=out, enabled=enabled):
        seen.append(done_and_total("refresh")[0])
    assert seen == [0, 1, 2, 3] and done_and_total("refresh") == (4, None)


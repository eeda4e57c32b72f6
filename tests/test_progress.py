"""Progress off a terminal: whole lines at most one per interval and a last one, never a carriage return."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from protocol.runtime import progress
from scenarios import ecommerce_bank
from scenarios.experiment import run_experiment

EVERY = 2  # seconds between a bar's lines in the scenario's logs
LINE = re.compile(r"^(PSI|A alone|epoch \d+/\d+|recommend|refresh): .*?, (\d\d:\d\d) elapsed", re.MULTILINE)


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
    bar = progress.progress_bar(total=100, desc="epoch 1/12", unit="batch", file=log, leave=False)
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
    assert list(progress.progress_bar(range(5), desc="A alone", unit="epoch", file=log)) == list(range(5))
    assert log.getvalue().splitlines()[-1].startswith("A alone: 5/5 epoch (100 %)")
    open_ended = io.StringIO()
    for _ in progress.progress_bar((batch for batch in range(3)), desc="refresh", unit="batch", file=open_ended):
        pass
    assert open_ended.getvalue().splitlines()[-1].startswith("refresh: 3 batch, ")
    assert "%" not in open_ended.getvalue() and "left" not in open_ended.getvalue()
    quiet = io.StringIO()
    assert list(progress.progress_bar(range(5), desc="A alone", file=quiet, enabled=False)) == list(range(5))
    assert quiet.getvalue() == ""


def test_a_terminal_gets_tqdms_bar() -> None:
    screen = Terminal()
    for _ in progress.progress_bar(range(3), desc="PSI", file=screen, mininterval=0):
        pass
    assert "\r" in screen.getvalue()


@pytest.mark.integration
def test_a_scenarios_logs_hold_whole_progress_lines_at_most_one_per_interval(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VFREC_PROGRESS_SECONDS", str(EVERY))
    run = ecommerce_bank.prepare(tmp_path, users=900, epochs=2, seed=0, progress=True, batch_users=8)
    run_experiment(run, 600, stream=False)
    bars: dict[tuple[str, str], list[int]] = {}
    for role in ("party_a", "party_b"):
        text = run.output(role).read_text()
        assert "\r" not in text, role
        for desc, elapsed in LINE.findall(text):
            minutes, seconds = elapsed.split(":")
            bars.setdefault((role, desc), []).append(int(minutes) * 60 + int(seconds))
    assert {("party_a", "PSI"), ("party_b", "PSI"), ("party_a", "A alone"), ("party_a", "epoch 1/2")} <= set(bars)
    for bar, times in bars.items():  # the last line is written on close, whenever that is
        assert all(later - earlier >= EVERY for earlier, later in zip(times, times[1:-1])), (bar, times)
    assert max(len(times) for times in bars.values()) > 2, "no bar ran long enough to show the interval"

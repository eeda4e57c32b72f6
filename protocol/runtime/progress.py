"""Progress for people and for logs: a bar on a terminal, whole lines anywhere else.

A tqdm bar redraws itself with carriage returns, which is right on a terminal and
wrong in a log file, a journal or cron's mail, where every frame lands (hundreds a
minute). Off a terminal `progress_bar` writes one plain line when the work starts,
then at most one every `LINE_SECONDS` (the environment's `VFREC_PROGRESS_SECONDS`,
default 30: done, total, rate, time elapsed and left), and a last one when it ends.
Shown or not, every step is reported to the role's metrics as `vfrec_progress_done{task}`
(protocol/observe.py).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO

from tqdm import tqdm

from protocol import observe

LINE_SECONDS = float(os.environ.get("VFREC_PROGRESS_SECONDS", "30"))
LINE_FORMAT = ("{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f} %), {rate_fmt}, {elapsed} elapsed, "
               "{remaining} left{postfix}")
OPEN_FORMAT = "{desc}: {n_fmt} {unit}, {rate_fmt}, {elapsed} elapsed{postfix}"  # no total known


class Reported(tqdm):
    """tqdm that reports each step to the role's metrics under its `task` name."""

    def __init__(self, *args: object, task: str, **kwargs: object):
        self.task = task
        super().__init__(*args, **kwargs)
        self.done = self.n
        observe.progress(task, self.done, self.total)

    def update(self, n: float = 1) -> bool | None:
        if self.iterable is None:  # iterating, tqdm calls update only when it redraws: __iter__ reports instead
            self.done += n
            observe.progress(self.task, self.done, self.total)
        return super().update(n)

    def __iter__(self) -> Iterator:
        for item in super().__iter__():
            yield item
            self.done += 1
            observe.progress(self.task, self.done, self.total)


class Lines(Reported):
    """tqdm that writes whole lines, no carriage returns: the first at once, then at most one every `mininterval`
    seconds however often it is updated or given a postfix, and a last one on close."""

    written_at = -math.inf

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        now = time.monotonic()
        if msg is None and now - self.written_at >= self.mininterval:
            self.write_line()
            self.written_at = now
        return True

    def write_line(self) -> None:
        self.fp.write(self.__str__().strip() + "\n")
        self.fp.flush()

    def close(self) -> None:
        if getattr(self, "disable", True):
            return
        self.write_line()
        self.disable = True
        self._decr_instances(self)


class _ToLog:
    """A file for `Lines` that logs each line it is given (under --log-format json every line must be JSON)."""

    def __init__(self) -> None:
        self.log = logging.getLogger("vfrec.progress")

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.log.info("%s", line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


_default_out: _ToLog | None = None


def lines_to_log() -> None:
    """Send progress lines to the log instead of stderr."""
    global _default_out
    _default_out = _ToLog()


def progress_bar(iterable: Iterable | None = None, *, task: str, enabled: bool = True, file: IO[str] | None = None,
                 **kwargs: object) -> tqdm:
    """A progress bar over `iterable` (or one updated by hand with `total=`) of `task` (its metrics' label): tqdm's
    bar when `file` (stderr by default) is a terminal, else `Lines`; `enabled=False` shows nothing."""
    out = file or _default_out or sys.stderr
    if out.isatty():
        return Reported(iterable, task=task, file=out, disable=not enabled, **kwargs)
    kwargs.pop("mininterval", None)
    kwargs.pop("leave", None)
    known = kwargs.get("total") is not None or hasattr(iterable, "__len__")
    return Lines(iterable, task=task, file=out, disable=not enabled, mininterval=LINE_SECONDS,
                 bar_format=LINE_FORMAT if known else OPEN_FORMAT, **kwargs)

"""Progress for people and for logs: a bar on a terminal, whole lines anywhere else.

A tqdm bar redraws itself with carriage returns, which is right on a terminal and
wrong in a log file, a journal or cron's mail, where every frame lands (hundreds a
minute). Off a terminal `progress_bar` writes one plain line when the work starts,
then at most one every `LINE_SECONDS` (the environment's `VFREC_PROGRESS_SECONDS`,
default 30: done, total, rate, time elapsed and left), and a last one when it ends.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable
from typing import IO

from tqdm import tqdm

LINE_SECONDS = float(os.environ.get("VFREC_PROGRESS_SECONDS", "30"))
LINE_FORMAT = ("{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f} %), {rate_fmt}, {elapsed} elapsed, "
               "{remaining} left{postfix}")
OPEN_FORMAT = "{desc}: {n_fmt} {unit}, {rate_fmt}, {elapsed} elapsed{postfix}"  # no total known


class Lines(tqdm):
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


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, file: IO[str] | None = None,
                 **kwargs: object) -> tqdm:
    """A progress bar over `iterable` (or one updated by hand with `total=`): tqdm's bar when `file` (stderr by
    default) is a terminal, else `Lines`; `enabled=False` shows nothing."""
    out = file or sys.stderr
    if out.isatty():
        return tqdm(iterable, file=out, disable=not enabled, **kwargs)
    kwargs.pop("mininterval", None)
    kwargs.pop("leave", None)
    known = kwargs.get("total") is not None or hasattr(iterable, "__len__")
    return Lines(iterable, file=out, disable=not enabled, mininterval=LINE_SECONDS,
                 bar_format=LINE_FORMAT if known else OPEN_FORMAT, **kwargs)

"""Where a role's time goes, per named phase: wall time and busy time (wall minus waiting on peers)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from protocol.net.transport import Endpoint


class StepClock:
    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.wall: dict[str, float] = defaultdict(float)
        self.busy: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self._mark = time.perf_counter()
        self._waited = endpoint.waited

    def restart(self) -> None:
        """Forget the time since the last lap (it belongs to no phase)."""
        self._mark, self._waited = time.perf_counter(), self.endpoint.waited

    def lap(self, phase: str) -> None:
        now, waited = time.perf_counter(), self.endpoint.waited
        self.wall[phase] += now - self._mark
        self.busy[phase] += (now - self._mark) - (waited - self._waited)
        self.count[phase] += 1
        self._mark, self._waited = now, waited

    def summary(self) -> dict:
        return {p: {"wall_s": round(self.wall[p], 3), "busy_s": round(self.busy[p], 3), "count": self.count[p]}
                for p in self.wall}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")

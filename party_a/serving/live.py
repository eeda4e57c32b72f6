"""The Recommender A's service answers with, replaced whole while the service runs.

When the loaded Recommender is stale (`Recommender.stale_reason`: models/CURRENT names
another model, the shared list was rewritten, or the u store holds new users A's
tables did not), a new one is loaded in a background thread, A's tables read again,
and swapped in by one assignment once whole. Requests meanwhile keep being answered by
the old one, and each request takes `current` once, so every answer and batch is made
by one model and names it. A load that fails is logged and the old Recommender stays;
the same reason does not start another load until something changes again. `Refresher` has the service
check at most once per interval, so that no request pays for a file check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import Counter

from party_a.serving.recommender import Recommender
from protocol.errors import VfrecError

log = logging.getLogger(__name__)


class LiveModel:
    """`current` is the Recommender in service; `check()` (called at most once a second by the service) keeps it
    fresh. `load` builds a new Recommender of the model in service (None: never replaced, only its u store is
    picked up); `reloaded` hears of each attempt: the new Recommender, or None when the load failed."""

    def __init__(self, recommender: Recommender, load: Callable[[], Recommender] | None = None,
                 reloaded: Callable[[Recommender | None], None] = lambda _: None):
        self.current = recommender
        self._load = load
        self._reloaded = reloaded
        self._loading: threading.Thread | None = None
        self._failed: str | None = None  # the reason of the last load that failed

    def check(self) -> bool:
        """Pick up a rewritten u store in place, or start loading a new Recommender in the background when the
        current one is stale (not while a load runs); True if the u store was reloaded."""
        if self._loading is not None and self._loading.is_alive():
            return False
        current = self.current
        reloaded = current.refresh_if_changed()
        reason = current.stale_reason() if self._load is not None else None
        if reason is None:
            self._failed = None  # what failed to load is no longer wanted: a later change tries again
        elif reason != self._failed:
            self._loading = threading.Thread(target=self._replace, args=(reason,), name="model-reload", daemon=True)
            self._loading.start()
        return reloaded

    def wait(self, timeout: float | None = None) -> None:
        """Until a load in the background (if any) is done."""
        if self._loading is not None:
            self._loading.join(timeout)

    def _replace(self, reason: str) -> None:
        log.info("%s: loading the model in service in the background; model %s answers meanwhile", reason,
                 self.current.model_id)
        started = time.perf_counter()
        try:
            new = self._load()
        except Exception as exc:  # noqa: BLE001 - whatever stops a load, the service goes on with the old model
            self._failed = reason
            log.warning("reload failed, still serving model %s: %s", self.current.model_id, exc,
                        exc_info=not isinstance(exc, VfrecError))
            self._reloaded(None)
            return
        self.current = new
        self._failed = None
        self._reloaded(new)
        log.info("model %s in service (%d items, %d shared users), loaded in %.1f s", new.model_id, new.n_items,
                 new.shared_users(), time.perf_counter() - started)

    def u_store_age_seconds(self) -> float:
        return self.current.u_store_age_seconds()


class Refresher:
    """Calls `live.check()` at most once per `every` seconds, so that a rewritten u store, and a new model in
    service (party_a/serving/live.py), are picked up without a restart and without a file check per request. A failed
    reload keeps the previous store."""

    def __init__(self, live: LiveModel, every: float, reloads: Counter):
        self._live = live
        self._every = every
        self._reloads = reloads
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._last_error = ""

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next_check or not self._lock.acquire(blocking=False):
            return  # checked recently, or another request is checking right now
        try:
            self._next_check = now + self._every
            if self._live.check():
                self._reloads.inc()
                log.info("u store changed on disk: reloaded (age %.0f s)", self._live.u_store_age_seconds())
            self._last_error = ""
        except VfrecError as exc:
            if str(exc) != self._last_error:  # once per distinct failure, not once a second
                log.warning("u store reload failed, still serving the previous one: %s", exc)
            self._last_error = str(exc)
        finally:
            self._lock.release()

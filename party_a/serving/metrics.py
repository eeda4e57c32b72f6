"""The Prometheus metrics of A's HTTP service (docs/operations.md lists them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from party_a.serving.live import LiveModel
from party_a.serving.recommender import Recommender

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own so that each app (and test) starts at zero.
    `recommender`: what the u store's age is read from."""

    def __init__(self, recommender: Recommender | LiveModel):
        self.registry = CollectorRegistry()
        self.requests = Counter("vfrec_http_requests", "HTTP requests by endpoint (route template) and status code",
                                ("endpoint", "status"), registry=self.registry)
        self.latency = Histogram("vfrec_http_request_duration_seconds", "HTTP request latency by endpoint",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.answers = Counter("vfrec_answers",
                               "Answers (one per user) by source: federated, a_alone, item_knn, popularity",
                               ("source",), registry=self.registry)
        self.reloads = Counter("vfrec_u_store_reloads", "Reloads of the u store after it changed on disk",
                               registry=self.registry)
        age = Gauge("vfrec_u_store_age_seconds", "Seconds since the u store was last written",
                    registry=self.registry)
        age.set_function(recommender.u_store_age_seconds)
        self.model = Gauge("vfrec_model_info", "1 for the model in service (the one answering)", ("model_id",),
                           registry=self.registry)
        self.model_reloads = Counter("vfrec_model_reloads",
                                     "Loads of a whole new model in service while serving (CURRENT, the shared list "
                                     "or new users changed), by result: loaded (swapped in) or failed (old kept)",
                                     ("result",), registry=self.registry)

    def serving(self, model_id: str) -> None:
        """`model_id` is the model in service now."""
        self.model.clear()
        self.model.labels(model_id).set(1)

    def reloaded(self, recommender: Recommender | None) -> None:
        """A whole new model was loaded and swapped in (None: the load failed)."""
        self.model_reloads.labels("failed" if recommender is None else "loaded").inc()
        if recommender is not None:
            self.serving(recommender.model_id)

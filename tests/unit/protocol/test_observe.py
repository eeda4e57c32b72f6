"""A role's /metrics and /healthz, its JSON log lines and its [observe] setting, in one process."""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol import observe
from protocol.errors import ConfigError
from protocol.privacy import RowNoise, RowPrivacy
from protocol.runtime.cli import JsonLines
from protocol.settings.config import Table, read_observe
from scenarios.launch import free_ports


class Peers:
    """An endpoint's liveness as the observer reads it."""

    generation = 3

    def peer_liveness(self) -> dict[str, tuple[bool, float | None]]:
        return {"party_b": (False, 7.5), "coordinator": (True, 0.2)}


@pytest.fixture
def watched() -> None:
    saved = (dict(observe.context), observe._watched.endpoint)
    observe.watch("party_a", "run-7", Peers())
    yield
    observe.context.clear()
    observe.context.update(saved[0])
    observe._watched.endpoint = saved[1]


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_metrics_and_health_are_served_and_nothing_else(watched: None) -> None:
    port = free_ports(1)[0]
    observe.checkpoint_written()
    with observe.serving(("127.0.0.1", port)):
        status, kind, text = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and kind.startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        assert samples[("vfrec_peer_up", (("peer", "party_b"),))] == 0
        assert samples[("vfrec_peer_up", (("peer", "coordinator"),))] == 1
        assert samples[("vfrec_peer_last_answer_seconds", (("peer", "party_b"),))] == 7.5
        assert samples[("vfrec_generation", ())] == 3
        assert samples[("vfrec_role_info", (("role", "party_a"), ("run_id", "run-7")))] == 1
        assert 0 <= samples[("vfrec_checkpoint_age_seconds", ())] < 5
        status, kind, text = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and kind == "application/json"
        assert json.loads(text) == {"status": "ok", "role": "party_a", "run_id": "run-7", "generation": 3,
                                    "peers": {"party_b": False, "coordinator": True}}
        assert get(f"http://127.0.0.1:{port}/docs")[0] == 404
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)  # closed with the run


def test_a_json_line_carries_the_runs_context_and_the_message(watched: None) -> None:
    observe.at(epoch=2, step=41)
    record = logging.LogRecord("party_a.training.loop", logging.WARNING, __file__, 1, "epoch %d: %s", (2, "slow"), None)
    line = json.loads(JsonLines("party_a").format(record))
    assert line.pop("time").endswith("+00:00")
    assert line == {"level": "WARNING", "role": "party_a", "run_id": "run-7", "generation": 3, "epoch": 2,
                    "step": 41, "logger": "party_a.training.loop", "message": "epoch 2: slow"}
    try:
        raise ValueError("bad value")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: bad value" in json.loads(JsonLines("party_a").format(record))["error"]


def test_noise_releases_and_epsilon_reach_the_metrics() -> None:
    before = observe.REGISTRY.get_sample_value("vfrec_releases_total")
    noise = RowNoise(RowPrivacy(clip=1.0, noise_multiplier=2.0, seed=1), bound=4.0)
    noise(np.arange(5), np.ones((5, 3)))
    noise(np.arange(3), np.ones((3, 3)))
    assert observe.REGISTRY.get_sample_value("vfrec_releases_total") == before + 8
    assert observe.REGISTRY.get_sample_value("vfrec_epsilon_spent") == pytest.approx(noise.spent()["epsilon"])
    assert noise.spent()["releases_per_user"] == 2


@pytest.mark.parametrize("listen, error", [
    ("9464", "expected host:port"),
    ("127.0.0.1:0", "expected host:port"),
    ("localhost:http", "expected host:port"),
])
def test_a_bad_observe_address_is_refused_naming_the_key(tmp_path: Path, listen: str, error: str) -> None:
    config = tmp_path / "a.toml"
    with pytest.raises(ConfigError, match=rf"{config}: \[observe\] listen: {error}"):
        read_observe(Table({"observe": {"listen": listen}}, config))


def test_observe_is_off_unless_set_and_typos_are_named(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    assert read_observe(Table({}, config)) is None
    assert read_observe(Table({"observe": {"listen": ""}}, config)) is None
    assert read_observe(Table({"observe": {"listen": "[::1]:9464"}}, config)) == ("::1", 9464)
    with pytest.raises(ConfigError, match=r"unknown key \[observe\] port"):
        read_observe(Table({"observe": {"port": 9464}}, config))

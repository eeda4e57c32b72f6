"""Party A's HTTP service around a fake Recommender: the endpoints' shapes, refusals with a reason, the bearer
token, metrics, picking up a rewritten u store; the [serve] config keys; the command line's subcommands."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from party_a.config import ServeSettings, read_serve
from party_a.serving.http import body_limit, create_app, read_token, shared_socket
from party_a.serving.recommender import Answer, Recommendation
from protocol.errors import ConfigError, DataError, StoreError
from protocol.runtime import cli
from protocol.settings.config import Table
from scenarios.launch import ROOT, write_local_run

ONE = "/v1/users/{}/recommendations"
BATCH = "/v1/recommendations"
TOKEN = "s3cret-token"


@dataclass
class FakeRecommender:
    """Users "s*" are shared, "a*" are A's own, anything else is unknown. `u_version` moves the shared users'
    scores, as a new u store would; `pending` is the version a refresh would load."""

    model_id: str = "model-7"
    n_items: int = 5
    u_version: int = 0
    pending: int | None = None
    refresh_error: Exception | None = None
    refresh_calls: int = 0
    stale: str | None = None  # why a whole new model should be loaded (CURRENT moved, ...)
    during: Callable[[], None] | None = None  # runs inside each recommend call
    calls: list[tuple[list[str], int, bool]] = field(default_factory=list)

    def recommend(self, user_ids: list[str], k: int, include_bought: bool = False) -> list[Answer]:
        self.calls.append((list(user_ids), k, include_bought))
        if self.during is not None:
            self.during()
        answers = []
        for user in user_ids:
            source = "federated" if user.startswith("s") else "a_alone" if user.startswith("a") else "popularity"
            shift = self.u_version if source == "federated" else 0
            items = [Recommendation(f"i{j}", float(self.n_items - j + shift),
                         {"title": f"item {j}", "price": np.int64(10 * j), "rating": math.nan})
                     for j in range(min(k, self.n_items))]
            answers.append(Answer(user, source, items))
        return answers

    def refresh_if_changed(self) -> bool:
        self.refresh_calls += 1
        if self.refresh_error is not None:
            raise self.refresh_error
        if self.pending is None:
            return False
        self.u_version, self.pending = self.pending, None
        return True

    def stale_reason(self) -> str | None:
        return self.stale

    def u_store_age_seconds(self) -> float:
        return 42.5

    def shared_users(self) -> int:
        return 1200


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client(recommender: FakeRecommender | None = None, settings: ServeSettings | None = None,
           refresh_every: float = 1.0) -> TestClient:
    """A client that sends the app's token with every request."""
    app = create_app(recommender or FakeRecommender(), settings or ServeSettings(), TOKEN.encode(), refresh_every)
    return TestClient(app, headers=AUTH)


def test_one_user_answer_has_model_source_and_items_with_their_columns() -> None:
    fake = FakeRecommender()
    r = client(fake).get(ONE.format("s1"), params={"k": 3, "include_bought": "true"})
    assert r.status_code == 200
    body = r.json()
    assert (body["model_id"], body["user_id"], body["source"]) == ("model-7", "s1", "federated")
    assert body["items"][0] == {"item_id": "i0", "score": 5.0, "title": "item 0", "price": 0, "rating": None}
    assert [i["item_id"] for i in body["items"]] == ["i0", "i1", "i2"]
    assert fake.calls == [(["s1"], 3, True)]


def test_k_and_include_bought_have_defaults() -> None:
    fake = FakeRecommender(n_items=50)
    r = client(fake).get(ONE.format("a1"))
    assert r.status_code == 200 and r.json()["source"] == "a_alone" and len(r.json()["items"]) == 10
    assert fake.calls == [(["a1"], 10, False)]


def test_unknown_user_is_answered_from_popularity_not_refused() -> None:
    r = client().get(ONE.format("nobody"))
    assert r.status_code == 200
    assert r.json()["source"] == "popularity" and r.json()["items"]


def test_batch_answers_every_user_in_order_with_the_single_answer_shape() -> None:
    c = client()
    r = c.post(BATCH, json={"users": ["s1", "a2", "nobody"], "k": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["model_id"] == "model-7"
    assert [(x["user_id"], x["source"]) for x in body["results"]] == [
        ("s1", "federated"), ("a2", "a_alone"), ("nobody", "popularity")]
    assert body["results"][0] == c.get(ONE.format("s1"), params={"k": 2}).json()


@pytest.mark.parametrize("k", [0, -1, 101])
def test_k_out_of_range_is_refused_naming_k_and_the_range(k: int) -> None:
    c = client()
    for r in (c.get(ONE.format("s1"), params={"k": k}), c.post(BATCH, json={"users": ["s1"], "k": k})):
        assert r.status_code == 422
        assert r.json()["detail"] == f"k must be between 1 and 100 ([serve] max_k), got {k}"


def test_max_k_comes_from_the_settings() -> None:
    c = client(settings=ServeSettings(max_k=20))
    assert c.get(ONE.format("s1"), params={"k": 20}).status_code == 200
    assert "between 1 and 20" in c.get(ONE.format("s1"), params={"k": 21}).json()["detail"]


def test_non_integer_k_is_refused_naming_k() -> None:
    r = client().get(ONE.format("s1"), params={"k": "ten"})
    assert r.status_code == 422 and r.json()["detail"].startswith("query.k: ")


def test_oversized_batch_is_refused_naming_max_batch() -> None:
    fake = FakeRecommender()
    c = client(fake, ServeSettings(max_batch=3))
    assert c.post(BATCH, json={"users": ["a", "b", "c"]}).status_code == 200
    r = c.post(BATCH, json={"users": ["a", "b", "c", "d"]})
    assert r.status_code == 413
    assert r.json()["detail"] == "batch of 4 users is larger than max_batch 3 ([serve] max_batch)"
    assert len(fake.calls) == 1


def asgi_post(app: object, path: str, chunks: Iterator[bytes], headers: list[tuple[bytes, bytes]]
              ) -> tuple[int, dict, int]:
    """POST a body streamed in `chunks` (made only as the app asks for them) straight to the ASGI app; the status,
    the JSON answer and how many body bytes the app took."""
    taken, sent = 0, []

    async def receive() -> dict:
        nonlocal taken
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        taken += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("t", 1),
             "server": ("t", 80), "headers": [(b"authorization", f"Bearer {TOKEN}".encode()), *headers]}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")), taken


def huge_batch(chunk_users: int = 4096) -> Iterator[bytes]:
    """A batch body of 2^20 users (about 12 MiB), made chunk by chunk."""
    yield b'{"users": ["u0"'
    for start in range(1, 1 << 20, chunk_users):
        yield b"".join(b',"u%07d"' % u for u in range(start, start + chunk_users))
    yield b"]}"


def test_an_oversized_streamed_body_is_refused_with_413_before_it_is_read_whole_or_parsed() -> None:
    fake = FakeRecommender()
    app = create_app(fake, ServeSettings(max_batch=100), TOKEN.encode())
    limit = body_limit(100)
    tracemalloc.start()
    try:
        status, body, taken = asgi_post(app, BATCH, huge_batch(), [(b"content-type", b"application/json")])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413 and body["detail"] == (f"request body larger than {limit} bytes, the most a batch of "
                                                f"max_batch users may take ([serve] max_batch)")
    assert taken < limit + 50_000  # one chunk past the limit, not the 12 MiB
    assert peak < 4 * 2**20 and fake.calls == []


def test_a_body_whose_length_is_over_the_limit_is_refused_unread_and_a_full_batch_still_fits() -> None:
    fake = FakeRecommender()
    c = client(fake, ServeSettings(max_batch=3))
    limit = body_limit(3)
    r = c.post(BATCH, content=b" " * (limit + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "([serve] max_batch)" in r.json()["detail"]
    status, _, taken = asgi_post(c.app, BATCH, iter([b"{}"]), [(b"content-length", str(limit + 1).encode())])
    assert (status, taken) == (413, 0)
    long_ids = ["x" * 480, "y" * 480, "z" * 480]
    assert c.post(BATCH, json={"users": long_ids, "k": 2, "include_bought": True}).status_code == 200
    assert fake.calls == [(long_ids, 2, True)]


def test_malformed_json_is_refused_with_the_reason() -> None:
    r = client().post(BATCH, content=b'{"users": ["s1",', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"] == "body is not valid JSON: Expecting value at character 16"


def test_a_body_not_sent_as_json_is_refused_with_the_reason() -> None:
    r = client().post(BATCH, content=b'{"users": ["s1"]}', headers={"content-type": "text/plain"})
    assert r.status_code == 422
    assert r.json()["detail"] == "body: expected a JSON object sent with Content-Type: application/json"


@pytest.mark.parametrize("body, reason", [
    ({}, "body.users: Field required"),
    ({"users": "s1"}, "body.users: Input should be a valid list"),
    ({"users": ["s1"], "user": ["s2"]}, "body.user: Extra inputs are not permitted"),
    ({"users": ["s1"], "k": "many"}, "body.k: Input should be a valid integer"),
])
def test_wrong_batch_bodies_are_refused_naming_the_field(body: dict, reason: str) -> None:
    r = client().post(BATCH, json=body)
    assert r.status_code == 422
    assert r.json()["detail"].startswith(reason)
    assert r.json()["errors"]  # pydantic's full list, for programs


def test_healthz_reports_model_shared_users_and_u_store_age() -> None:
    r = client().get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model_id": "model-7", "n_items": 5, "shared_users": 1200,
                        "u_store_age_seconds": 42.5}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_healthz_without_the_token_says_only_that_the_service_is_up(headers: dict) -> None:
    app = create_app(FakeRecommender(), ServeSettings(), TOKEN.encode())
    r = TestClient(app).get("/healthz", headers=headers)
    assert r.status_code == 200 and r.json() == {"status": "ok"}  # not the intersection's size nor refresh times


def test_without_a_configured_token_one_is_generated_into_the_workdir_and_never_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="party_a.serving.http"):
        token = read_token(ServeSettings(), tmp_path)
    path = tmp_path / "serve_token"
    assert token and path.read_bytes().strip() == token and path.stat().st_mode & 0o777 == 0o600
    assert str(path) in caplog.text and token.decode() not in caplog.text
    assert read_token(ServeSettings(), tmp_path) == token  # kept across restarts: clients keep working
    app = create_app(FakeRecommender(), ServeSettings(), token)
    assert TestClient(app).get(ONE.format("s1")).status_code == 401
    assert read_token(ServeSettings(require_token=False), tmp_path / "open") is None


def test_openapi_document_has_a_title_and_the_endpoints() -> None:
    c = client()
    doc = c.get("/openapi.json").json()
    assert doc["info"]["title"] == "vfrec party A: recommendations"
    assert "popularity" in doc["info"]["description"]
    assert {ONE.format("{user_id}"), BATCH, "/healthz", "/metrics"} <= set(doc["paths"])
    assert c.get("/docs").status_code == 200
    open_doc = TestClient(create_app(FakeRecommender(), ServeSettings(), None)).get("/openapi.json").json()
    assert "securitySchemes" not in open_doc.get("components", {})  # without a token nothing to authorise


def token_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TestClient:
    """A client that sends no token, to an app whose token comes from an environment variable."""
    monkeypatch.setenv("VFREC_TEST_TOKEN", f"  {TOKEN}\n")
    settings = ServeSettings(token_env="VFREC_TEST_TOKEN")
    return TestClient(create_app(FakeRecommender(), settings, read_token(settings, tmp_path)))


@pytest.mark.parametrize("path", [ONE.format("s1"), "/metrics", "/no/such/path"])
def test_with_a_token_every_endpoint_but_the_open_ones_needs_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                path: str) -> None:
    c = token_client(monkeypatch, tmp_path)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        r = c.get(path, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in r.text
    r = c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == (404 if path == "/no/such/path" else 200)
    assert c.get("/healthz").status_code == 200


def test_the_docs_page_its_assets_and_the_openapi_document_need_no_token_nor_the_internet(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    c = token_client(monkeypatch, tmp_path)
    page = c.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert not re.findall(r"(?:https?:)?//[^\s\"'<>]+", page.text)  # every asset from this service, none from a CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {a.rsplit("/", 1)[-1] for a in assets} == {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}
    for asset in assets:
        r = c.get(asset)
        assert r.status_code == 200 and r.content, asset
    doc = c.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "[serve] token_file or token_env"}
    needs = {path: [op.get("security") for op in ops.values()] for path, ops in doc["paths"].items()}
    assert needs[ONE.format("{user_id}")] == needs[BATCH] == needs["/metrics"] == [[{"bearer": []}]]
    assert needs["/healthz"] == [None]  # the docs page's "Authorize" then sends the token where it is needed
    # no ReDoc: FastAPI's would load its script from a CDN
    assert c.get("/redoc", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    assert c.get("/static/swagger-ui/no-such-file.js").status_code == 404


def test_the_batch_endpoint_needs_the_token_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    c = token_client(monkeypatch, tmp_path)
    assert c.post(BATCH, json={"users": ["s1"]}).status_code == 401
    assert c.post(BATCH, json={"users": ["s1"]}, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_token_file_is_read_stripped_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"\[serve\] token_file {token_file} is readable by others"):
        read_token(ServeSettings(token_file=token_file), tmp_path)
    token_file.chmod(0o600)
    settings = ServeSettings(token_file=token_file)
    c = TestClient(create_app(FakeRecommender(), settings, read_token(settings, tmp_path)))
    assert c.get(ONE.format("s1")).status_code == 401
    assert c.get(ONE.format("s1"), headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_an_unset_token_variable_stops_startup_rather_than_serving_openly(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    monkeypatch.delenv("VFREC_TEST_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"\[serve\] token_env: environment variable VFREC_TEST_TOKEN is unset"):
        read_token(ServeSettings(token_env="VFREC_TEST_TOKEN"), tmp_path)


def metric(text: str, name: str) -> float:
    """The value of the sample line starting with `name` (labels included) in Prometheus text."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} not in metrics"
    return values[0]


def test_metrics_count_requests_latency_answers_and_the_u_store_age() -> None:
    c = client()
    c.get(ONE.format("s1"))
    c.get(ONE.format("nobody"))
    c.get(ONE.format("s1"), params={"k": 0})
    c.post(BATCH, json={"users": ["s1", "a1", "a2"]})
    text = c.get("/metrics").text
    one = 'endpoint="/v1/users/{user_id}/recommendations"'
    assert metric(text, f'vfrec_http_requests_total{{{one},status="200"}}') == 2
    assert metric(text, f'vfrec_http_requests_total{{{one},status="422"}}') == 1
    assert metric(text, 'vfrec_http_requests_total{endpoint="/v1/recommendations",status="200"}') == 1
    assert metric(text, f'vfrec_http_request_duration_seconds_count{{{one}}}') == 3
    assert metric(text, f'vfrec_http_request_duration_seconds_bucket{{{one},le="1.0"}}') == 3
    assert f'vfrec_http_request_duration_seconds_bucket{{{one},le="0.0005"}}' in text
    assert metric(text, 'vfrec_answers_total{source="federated"}') == 2
    assert metric(text, 'vfrec_answers_total{source="a_alone"}') == 2
    assert metric(text, 'vfrec_answers_total{source="popularity"}') == 1
    assert metric(text, "vfrec_u_store_age_seconds") == 42.5
    assert "user_id=" not in text and '"s1"' not in text  # users never become labels


def test_a_rewritten_u_store_is_picked_up_without_restart() -> None:
    fake = FakeRecommender()
    c = client(fake, refresh_every=0)
    before = c.get(ONE.format("s1")).json()["items"][0]["score"]
    fake.pending = 3  # the u store changed on disk
    after = c.get(ONE.format("s1")).json()["items"][0]["score"]
    assert after == before + 3
    assert metric(c.get("/metrics").text, "vfrec_u_store_reloads_total") == 1


def test_the_u_store_is_checked_at_most_once_per_interval() -> None:
    fake = FakeRecommender()
    c = client(fake, refresh_every=3600)
    for _ in range(5):
        assert c.get(ONE.format("s1")).status_code == 200
    assert fake.refresh_calls == 1


def test_a_failed_reload_keeps_serving() -> None:
    fake = FakeRecommender(refresh_error=DataError("u store /w/u.npz is truncated"))
    r = client(fake, refresh_every=0).get(ONE.format("s1"))
    assert r.status_code == 200 and fake.refresh_calls == 1


def test_a_stale_model_is_replaced_in_the_background_and_a_failed_load_keeps_the_old_one() -> None:
    old, new = FakeRecommender(stale="models/CURRENT names model 'model-8'"), FakeRecommender(model_id="model-8")
    release, loads = threading.Event(), []

    def load() -> FakeRecommender:
        loads.append(len(loads))
        release.wait(10)
        if len(loads) == 1:
            raise StoreError("/w/models/model-8/alone.pt is corrupt")
        return new

    app = create_app(old, ServeSettings(), TOKEN.encode(), refresh_every=0, load=load)
    c = TestClient(app, headers=AUTH)
    for _ in range(3):  # the load has started and waits: the old model answers, and no second load starts
        body = c.post(BATCH, json={"users": ["s1", "a1"]}).json()
        assert {body["model_id"], *(r["model_id"] for r in body["results"])} == {"model-7"}
    assert loads == [0]
    release.set()
    deadline = time.monotonic() + 10
    while 'vfrec_model_reloads_total{result="failed"} 1.0' not in c.get("/metrics").text:
        assert time.monotonic() < deadline
        c.get(ONE.format("s1"))
    for _ in range(3):  # the same reason does not start another load
        assert c.get(ONE.format("s1")).json()["model_id"] == "model-7"
    assert loads == [0]
    reason, old.stale = old.stale, None  # rolled back: nothing to load
    assert c.get(ONE.format("s1")).json()["model_id"] == "model-7"
    old.stale = reason  # promoted again: the same reason, tried again
    while c.get(ONE.format("s1")).json()["model_id"] != "model-8":
        assert time.monotonic() < deadline
    assert loads == [0, 1]
    text = c.get("/metrics").text
    assert metric(text, 'vfrec_model_info{model_id="model-8"}') == 1 and 'model_id="model-7"' not in text
    assert metric(text, 'vfrec_model_reloads_total{result="loaded"}') == 1
    assert c.get("/healthz").json()["model_id"] == "model-8"


def test_a_batch_names_the_model_that_made_it_when_the_swap_lands_mid_request() -> None:
    answering, loaded = threading.Event(), threading.Event()

    def swap_now() -> None:  # the new model is swapped in while the old one is still answering this batch
        answering.set()
        loaded.wait(10)
        time.sleep(0.1)

    def load() -> FakeRecommender:
        answering.wait(10)
        loaded.set()
        return FakeRecommender(model_id="model-8")

    old = FakeRecommender(stale="models/CURRENT names model 'model-8'", during=swap_now)
    c = TestClient(create_app(old, ServeSettings(), TOKEN.encode(), refresh_every=0, load=load), headers=AUTH)
    body = c.post(BATCH, json={"users": ["s1", "a1", "x"]}).json()
    assert {body["model_id"], *(r["model_id"] for r in body["results"])} == {"model-7"}
    old.during = None
    assert c.post(BATCH, json={"users": ["s1"]}).json()["model_id"] == "model-8"


def serve_table(**keys: object) -> Table:
    return Table({"serve": keys} if keys else {}, Path("/cfg/a.toml"))


def test_serve_section_is_optional_with_the_documented_defaults() -> None:
    settings = read_serve(serve_table())
    assert settings == ServeSettings()
    assert settings.address == ("127.0.0.1", 8080)
    assert (settings.max_k, settings.max_batch, settings.access_log, settings.token_file, settings.refresh,
            settings.require_token, settings.reuse_port) == (100, 1000, False, None, True, True, False)


def test_serve_section_is_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    t = Table({"serve": {"listen": "[::1]:9000", "token_file": "token", "max_k": 20, "max_batch": 50,
                         "access_log": True, "refresh": False, "reuse_port": True}}, tmp_path / "a.toml")
    s = read_serve(t)
    assert (s.address, s.token_file, s.max_k, s.max_batch, s.access_log, s.refresh, s.reuse_port) == \
        (("::1", 9000), tmp_path / "token", 20, 50, True, False, True)


def test_service_processes_with_reuse_port_share_the_port() -> None:
    first = shared_socket("127.0.0.1", 0)
    first.listen()
    port = first.getsockname()[1]
    with first, shared_socket("127.0.0.1", port) as second:  # without SO_REUSEPORT: address already in use
        second.listen()
        assert second.getsockname()[1] == port


@pytest.mark.parametrize("keys, message", [
    ({"listen": "8080"}, r"\[serve\] listen: expected host:port"),
    ({"listen": "localhost:http"}, r"\[serve\] listen: expected host:port"),
    ({"listen": "localhost:70000"}, r"\[serve\] listen: expected host:port"),
    ({"max_k": 0}, r"\[serve\] max_k: must be positive"),
    ({"max_batch": "many"}, r"\[serve\] max_batch: expected int"),
    ({"token_file": "missing"}, r"\[serve\] token_file: file /cfg/missing not found"),
    ({"token_env": "A", "token_file": "/"}, r"\[serve\] token_file: (give at most one|file / not found)"),
    ({"workers": 4}, r"unknown key \[serve\] workers"),
])
def test_wrong_serve_keys_are_named(keys: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_serve(serve_table(**keys))


def test_two_token_sources_are_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    t = Table({"serve": {"token_file": "token", "token_env": "X"}}, tmp_path / "a.toml")
    with pytest.raises(ConfigError, match=r"\[serve\] token_file: give at most one of token_file and token_env"):
        read_serve(t)


def run_cli(monkeypatch: pytest.MonkeyPatch, argv: list[str], seen: list) -> None:
    monkeypatch.setattr(sys, "argv", ["party_x", *argv])

    def add_arguments(parser):
        parser.add_argument("--k", type=int, default=10)

    def fail(args):
        raise ConfigError("a.toml: [serve] listen: wrong")

    cli.run("party_x", "test", lambda path, resume, warm: seen.append(("default", path, resume, warm)), commands={
        "serve": cli.Command("serve", lambda args: seen.append(("serve", args.config))),
        "recommend": cli.Command("recommend", lambda args: seen.append(("recommend", args.config, args.k)),
                                 add_arguments),
        "fail": cli.Command("fail", fail),
    })


@pytest.mark.parametrize("argv, expected", [
    (["--config", "a.toml"], ("default", Path("a.toml"), False, False)),
    (["--config", "a.toml", "--resume"], ("default", Path("a.toml"), True, False)),
    (["--config", "a.toml", "--from", "current"], ("default", Path("a.toml"), False, True)),
    (["serve", "--config", "a.toml"], ("serve", Path("a.toml"))),
    (["--config", "a.toml", "serve"], ("serve", Path("a.toml"))),
    (["recommend", "--config", "a.toml", "--k", "20"], ("recommend", Path("a.toml"), 20)),
])
def test_cli_runs_the_default_job_or_the_named_command(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                       expected: tuple) -> None:
    seen: list = []
    run_cli(monkeypatch, argv, seen)
    assert seen == [expected]


@pytest.mark.parametrize("argv", [[], ["serve"], ["--config", "a.toml", "nonsense"]])
def test_cli_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(monkeypatch, argv, [])
    assert exited.value.code == 2


def test_serve_command_reports_a_bad_serve_key_in_one_line(tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("email\na@x.com\n")
    run = write_local_run(tmp_path / "run", {"party_a": {
        "users": {"table": str(users), "id_column": "email", "ids": {"kind": "email"}},
        "serve": {"listen": "everywhere"}}})
    result = subprocess.run([sys.executable, "-m", "party_a", "serve", "--config", str(run.configs["party_a"])],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "[serve] listen: expected host:port" in result.stderr and "Traceback" not in result.stderr


def test_cli_command_errors_are_one_line_and_an_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(monkeypatch, ["fail", "--config", "a.toml"], [])
    assert exited.value.code == 2
    assert caplog.messages == ["a.toml: [serve] listen: wrong"]

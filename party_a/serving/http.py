"""Party A's HTTP service: recommendations from the trained model, answered by A alone (B is not on the request path).

`python -m party_a serve --config a.toml` runs it; docs/serving.md lists the endpoints, the errors and
the metrics, docs/configuration.md the [serve] keys.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import fastapi_offline
import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from party_a.config import ServeSettings, load
from protocol.errors import ConfigError
from protocol.keys.keyfiles import new_passphrase, read_private, write_private

from party_a.serving.live import LiveModel, Refresher
from party_a.serving.metrics import Metrics
from party_a.serving.refresh import RefreshListener
from party_a.serving.recommender import Answer, Recommender, Source

log = logging.getLogger(__name__)

DOCS_PATH = "/docs"  # Swagger UI, its JS, CSS and favicon from the installed fastapi-offline: no internet needed
OPENAPI_PATH = "/openapi.json"
DOCS_ASSETS = "/static/swagger-ui"  # where fastapi-offline's static directory (Swagger UI 5) is mounted
SWAGGER_UI_DIR = Path(fastapi_offline.__file__).parent / "static"
# reachable without the bearer token: /healthz (it then says only "ok") for probes; the API's description and the
# docs page's assets, which a browser fetches without the header and which hold no data
OPEN_PATHS = frozenset({"/healthz", DOCS_PATH, OPENAPI_PATH, DOCS_ASSETS})
TOKEN_FILE = "serve_token"  # in the work directory: the token generated when none is configured
BODY_OVERHEAD = 1024  # bytes of a batch body besides its user IDs: braces, "k", "include_bought"
ID_BYTES = 512  # bytes a batch body may spend per user ID: 500 plain characters, or 80 escaped as \uXXXX

DESCRIPTION = """\
Recommendations from party A's trained vertical federated model. Party A answers alone: a user in the
intersection with party B is scored with B's contribution `u` as cached at the last refresh, so no request
reaches the other organisation.

Each answer's `source` says how it was made: `federated` (a shared user, with B's cached `u`), `a_alone`
(A's user outside the intersection, or a segment that chose A alone), `item_knn` (a segment that chose it)
or `popularity` (a user A does not know, not an error, or a segment that chose it).

The recommendation endpoints and `/metrics` require `Authorization: Bearer <token>`: the token of [serve]
token_file or token_env, or else the one generated into `<workdir>/serve_token` ([serve] require_token = false
turns this off). Open without it: `/healthz`, which then says only whether the service is up, and this page
(`/docs`, `/openapi.json` and the page's Swagger UI files, served by the service itself with no internet
access). `source` tells the caller whether a user ID is in the intersection with party B: give the token only
to callers entitled to know that.
"""


class Item(BaseModel):
    """One recommended item: its id, its score, and the item's columns as further fields."""

    model_config = ConfigDict(extra="allow")
    item_id: str
    score: float


class Recommendations(BaseModel):
    model_id: str
    user_id: str
    source: Source = Field(
        description="federated: shared user, B's cached u; a_alone: A's user outside the intersection or in "
                    "a segment that chose A alone; item_knn: a segment that chose item-kNN; popularity: unknown "
                    "user or a segment that chose popularity")
    items: list[Item] = Field(description="best first")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key ("user", "K") is refused, not silently ignored
    users: list[str]
    k: int = 10
    include_bought: bool = False


class BatchRecommendations(BaseModel):
    model_id: str
    results: list[Recommendations] = Field(description="one per requested user, in the request's order")


class Health(BaseModel):
    """Without the bearer token only `status`; the model's facts need the token (the number of shared users is
    the intersection's size)."""

    status: Literal["ok"]
    model_id: str | None = None
    n_items: int | None = None
    shared_users: int | None = None
    u_store_age_seconds: float | None = None


class Edge:
    """ASGI middleware in front of every request: the bearer-token check, the body size, then the request count
    and latency. Requests are labelled by route template, not path, so that users do not become time series.

    The body is read here, counted as it arrives, and refused with 413 as soon as it passes `max_body` (or at
    once when its Content-Length says it will), so an oversized body is never held whole nor parsed; the app
    then reads the body from memory. An open path's handler finds in `request.state.authorised` whether the
    request carried the token."""

    def __init__(self, app: ASGIApp, router: Router, metrics: Metrics, token: bytes | None, max_body: int):
        self.app = app
        self.router = router
        self.metrics = metrics
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        endpoint = self.endpoint(scope)
        status = 500  # if the app fails before it starts a response

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            authorised = self.token is None or self.authorised(scope)
            if not authorised and endpoint not in OPEN_PATHS:
                response = JSONResponse({"detail": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_noting_status)
                return
            body = await self.read_body(scope, receive)
            if body is None:
                response = JSONResponse({"detail": f"request body larger than {self.max_body} bytes, the most a "
                                                   f"batch of max_batch users may take ([serve] max_batch)"},
                                        status_code=413, headers={"Connection": "close"})
                await response(scope, receive, send_noting_status)
                return
            scope.setdefault("state", {})["authorised"] = authorised
            await self.app(scope, replay(body, receive), send_noting_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def endpoint(self, scope: Scope) -> str:
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path
        return "other"

    async def read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when it is (or says it will be) larger than `max_body`."""
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_body):
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the app sees an empty body, then the disconnect
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def authorised(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)
        return False


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app `body` (already read) in one message, then waits as the original does."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return replayed


def body_limit(max_batch: int) -> int:
    """The largest request body the service reads: a batch of `max_batch` users, each ID up to ID_BYTES."""
    return BODY_OVERHEAD + max_batch * ID_BYTES


def read_token(settings: ServeSettings, workdir: Path) -> bytes | None:
    """The bearer token: [serve] token_file's stripped content (mode 0600) or token_env's value; with neither, the
    token in `<workdir>/serve_token`, generated (mode 0600) when missing and its place logged, never its value;
    None only with [serve] require_token = false."""
    if settings.token_file is not None:
        token = read_private(settings.token_file, "[serve] token_file").strip()
        where = f"[serve] token_file {settings.token_file}"
    elif settings.token_env is not None:
        token = os.environ.get(settings.token_env, "").strip().encode()
        where = f"[serve] token_env: environment variable {settings.token_env}"
    elif not settings.require_token:
        log.warning("serving without a bearer token ([serve] require_token = false): anyone who reaches %s can ask "
                    "which user IDs are shared with party B", settings.listen)
        return None
    else:
        path = workdir / TOKEN_FILE
        if not path.exists():
            write_private(path, (new_passphrase() + "\n").encode(), exclusive=True)
            log.info("no [serve] token_file or token_env: generated a bearer token in %s (mode 0600); clients send "
                     "Authorization: Bearer <its content>", path)
        token = read_private(path, "generated bearer token file").strip()
        where = f"generated bearer token file {path}"
    if not token:
        raise ConfigError(f"{where} is unset or empty")
    return token


def json_value(value: object) -> object:
    """A column value JSON can hold: numpy scalars as Python ones, NaN (a missing value) as null."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and value != value else value


def json_response(body: dict) -> Response:
    """`body` written straight to JSON: the answers are built here in the documented shape, so validating them
    again on the way out (FastAPI's response_model) would only cost time on every request."""
    return Response(json.dumps(body, separators=(",", ":"), allow_nan=False), media_type="application/json")


def answer_json(model_id: str, answer: Answer) -> dict:
    """One user's answer as the API returns it; an item column named item_id or score cannot shadow those."""
    items = [{"item_id": r.item_id, "score": r.score,
              **{name: json_value(v) for name, v in r.columns.items() if name not in ("item_id", "score")}}
             for r in answer.items]
    return {"model_id": model_id, "user_id": answer.user_id, "source": answer.source, "items": items}


def validation_reason(error: dict) -> str:
    """One FastAPI/pydantic validation error as a short line naming the field."""
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "json_invalid":
        why = error.get("ctx", {}).get("error", error["msg"])
        return f"body is not valid JSON: {why} at character {error['loc'][-1]}"
    if where == "body" and isinstance(error.get("input"), (str, bytes)):  # sent without the JSON content type
        return "body: expected a JSON object sent with Content-Type: application/json"
    return f"{where}: {error['msg']}"


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 whose `detail` says in one line what is wrong, with pydantic's full list under `errors`."""
    errors = exc.errors()
    return JSONResponse({"detail": "; ".join(validation_reason(e) for e in errors),
                         "errors": jsonable_encoder(errors)}, status_code=422)


def create_app(recommender: Recommender, settings: ServeSettings, token: bytes | None,
               refresh_every: float = 1.0, load: Callable[[], Recommender] | None = None,
               listener: RefreshListener | None = None) -> FastAPI:
    """The HTTP app around `recommender`, every endpoint but OPEN_PATHS behind `token` (None: open, see
    `read_token`); `load` builds a new Recommender of the model in service, for when `recommender` goes stale
    (None: it is never replaced); `listener`, taking B's refresh sessions, follows the model swapped in."""

    def reloaded(loaded: Recommender | None) -> None:
        metrics.reloaded(loaded)
        if loaded is not None and listener is not None:
            listener.follow(loaded.model_id)

    live = LiveModel(recommender, load, reloaded)
    metrics = Metrics(live)
    metrics.serving(recommender.model_id)
    refresh = Refresher(live, refresh_every, metrics.reloads)
    # no CDN: FastAPI's own /docs loads Swagger UI from cdn.jsdelivr.net, blank on a host without internet access;
    # no ReDoc, which would need the same
    app = FastAPI(title="vfrec party A: recommendations", description=DESCRIPTION, version="1",
                  openapi_url=OPENAPI_PATH, docs_url=None, redoc_url=None)
    app.mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_middleware(Edge, router=app.router, metrics=metrics, token=token, max_body=body_limit(settings.max_batch))
    k_help = f"number of items to return, 1..{settings.max_k} ([serve] max_k)"
    bought_help = "also recommend items the user already bought"

    def recommend(user_ids: list[str], k: int, include_bought: bool) -> tuple[str, list[dict]]:
        """The ID of the model that answers, and its answers: one model makes them all."""
        if not 1 <= k <= settings.max_k:
            raise HTTPException(422, f"k must be between 1 and {settings.max_k} ([serve] max_k), got {k}")
        refresh()
        model = live.current
        answers = model.recommend(user_ids, k, include_bought)
        for answer in answers:
            metrics.answers.labels(answer.source).inc()
        return model.model_id, [answer_json(model.model_id, answer) for answer in answers]

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations, tags=["recommendations"],
             summary="Top-k items for one user")
    async def user_recommendations(user_id: str, k: int = Query(10, description=k_help),
                                   include_bought: bool = Query(False, description=bought_help)) -> Response:
        # scored on the event loop: one user takes well under a millisecond, and handing it to a thread costs
        # more than that once requests overlap (threads contend for the interpreter)
        return json_response(recommend([user_id], k, include_bought)[1][0])

    @app.post("/v1/recommendations", response_model=BatchRecommendations, tags=["recommendations"],
              summary=f"Top-k items for up to {settings.max_batch} users ([serve] max_batch)")
    def batch_recommendations(body: BatchRequest) -> Response:
        if len(body.users) > settings.max_batch:
            raise HTTPException(413, f"batch of {len(body.users)} users is larger than max_batch "
                                     f"{settings.max_batch} ([serve] max_batch)")
        model_id, results = recommend(body.users, body.k, body.include_bought)
        return json_response({"model_id": model_id, "results": results})

    @app.get("/healthz", response_model=Health, response_model_exclude_none=True, tags=["operations"],
             summary="Liveness without the token; with it, the model's facts too")
    def healthz(request: Request) -> dict:
        refresh()
        if not request.state.authorised:
            return {"status": "ok"}
        model = live.current
        return {"status": "ok", "model_id": model.model_id, "n_items": model.n_items,
                "shared_users": model.shared_users(), "u_store_age_seconds": model.u_store_age_seconds()}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi_with_token() -> dict:
        """FastAPI's schema, with the bearer token declared on every endpoint that needs it, so that the docs
        page's "Authorize" takes the token and "Try it out" sends it (the Edge middleware checks it, as ever)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            if token is not None:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer", "description": "[serve] token_file or token_env"}}
                for path, operations in schema["paths"].items():
                    if path not in OPEN_PATHS:
                        for operation in operations.values():
                            operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi_with_token

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{app.title}: API docs",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    return app


def shared_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT ([serve] reuse_port): every service process that binds it
    so shares the port, and the kernel spreads new connections over them."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def main(config_path: Path, alone: bool = False) -> None:
    """Load A's config and model store, then serve HTTP on [serve] listen until interrupted; with [serve] refresh,
    B's refresh sessions are taken in on [network] listen meanwhile. `alone`: every known user is served by A
    alone (to measure what federation costs a request)."""
    cfg = load(config_path)

    torch.set_num_threads(1)  # a request's scoring is small; threads would only contend across concurrent requests
    token = read_token(cfg.serve, cfg.basics.workdir)  # before the model loads: a bad token stops startup at once
    recommender = Recommender.load(cfg, alone)
    listener = RefreshListener(cfg) if cfg.serve.refresh else None
    app = create_app(recommender, cfg.serve, token, load=lambda: Recommender.load(cfg, alone), listener=listener)
    host, port = cfg.serve.address
    log.info("model %s (%d items, %d shared users) on http://%s:%d%s", recommender.model_id, recommender.n_items,
             recommender.shared_users(), host, port, ", bearer token required" if token else " WITHOUT a token")
    if listener is not None:
        listener.start()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=cfg.serve.access_log,
                                           log_config=None))
    try:
        server.run(sockets=[shared_socket(host, port)] if cfg.serve.reuse_port else None)
    finally:
        if listener is not None:
            listener.stop()

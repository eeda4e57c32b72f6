"""A client of A's HTTP service as the integration tests start it: the bearer token they configure, JSON requests
with it, and waiting for /healthz."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def get(url: str) -> dict:
    """GET with the token; the JSON answer."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=10) as response:
        return json.loads(response.read())


def post(url: str, body: dict) -> dict:
    """POST `body` as JSON with the token; the JSON answer."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **AUTH})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """/healthz's answer once the service `proc` gives one; fails if it stops or stays silent `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the service stopped while starting"
        try:
            return get(f"{base}/healthz")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise AssertionError(f"no answer from {base}/healthz within {timeout}s")

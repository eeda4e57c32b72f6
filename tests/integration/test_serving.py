"""Serving a trained model through real processes: A's HTTP service, the offline `recommend`, and B's refresh.

Story 2 is trained briefly (three processes, 2048-bit key); then the coordinator's
refresh service and A's `serve` run as processes, and B's `refresh` runs as one when
asked. Served answers must equal the offline ones bit for bit, keep coming with the
coordinator killed (B runs no process while A serves), and after B changes 10 shared
users' rows and refreshes, exactly those users' answers change. `recommend`'s table
is the same bits inline, on two local worker processes and on a local Ray cluster.
A's app in process follows CURRENT, the shared list and new customers without a restart
and without failing a request. Last, customers join both parties and others leave B: a
delta PSI and B's refresh later, the joined are served federated.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from party_a import config as party_a_config
from party_a.config import ServeSettings
from party_a.serving.recommend import recommend_all
from party_a.models.scoring import baseline_catalogue
from party_a.serving.refresh import RefreshListener
from party_a.data.segments import SEGMENTS, segment_of
from party_a.serving.http import create_app
from party_a.serving.recommender import Recommender
from party_a.serving.store import U_STORE, write_u_store
from party_b import config as party_b_config
from protocol.compute.pool import open_pool
from protocol.keys.keyfiles import write_private
from protocol.runtime.registry import promote, rollback
from protocol.settings.config import Compute
from protocol.store.models import current_model, refresh_run_id
from psi.shared import shared_path, write_shared
from scenarios import bank_offers
from scenarios.launch import LocalRun, free_ports, run_all, start, wait_all
from scenarios.launch import ROOT, _env
from tests.support.service_client import AUTH, TOKEN, get, post, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.long]
K = 10


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalRun, str]:
    root = tmp_path_factory.mktemp("serving")
    # story 2: B's columns carry a strong signal, so the model leaves epoch 0 by far (+.05 validation NDCG@3 here)
    # and reads u, which the refresh tests need
    run = bank_offers.prepare(root, users=1000, epochs=3, seed=3, progress=False, batch_users=16, lr=0.01,
                              tower={"lr": 0.01})
    out = run_all(run, timeout=600)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    port = free_ports(1)[0]
    token_file = run.dir("party_a") / "serve.token"
    write_private(token_file, TOKEN.encode())
    with open(run.configs["party_a"], "a") as f:
        f.write(f'\n[serve]\nlisten = "127.0.0.1:{port}"\ntoken_file = "serve.token"\n')
    return run, f"http://127.0.0.1:{port}"


def command(run: LocalRun, role: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(run.command(role, *args), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def answers(base: str, users: list[str]) -> dict[str, tuple[str, list[tuple[str, float]]]]:
    """Each user's (source, [(item, score)]) from the batch endpoint."""
    got = post(f"{base}/v1/recommendations", {"users": users, "k": K})["results"]
    return {r["user_id"]: (r["source"], [(i["item_id"], i["score"]) for i in r["items"]]) for r in got}


def users_of(run: LocalRun) -> tuple[list[str], list[str]]:
    """A's user IDs: the shared ones (in the u store) and the others."""
    _, ids = party_a_config.load(run.configs["party_a"]).users.load()
    store = next((run.workdir("party_a") / "models").glob("*/u.parquet"))
    shared = set(pd.read_parquet(store)["user_id"])
    return [u for u in ids if u in shared], [u for u in ids if u not in shared]


def purchases(run: LocalRun) -> dict[str, set[str]]:
    """Each user's bought items (A's positives), by A's normalised user ID."""
    cfg = party_a_config.load(run.configs["party_a"])
    spec = cfg.training.interactions
    orders = pd.read_csv(spec.path, dtype=str)
    if spec.label_column:
        orders = orders[orders[spec.label_column].astype(float) >= spec.threshold]
    out: dict[str, set[str]] = {}
    for user, item in zip(orders[spec.user_column], orders[spec.item_column]):
        out.setdefault(cfg.users.normalizer(user), set()).add(item)
    return out


def services(run: LocalRun) -> dict[str, subprocess.Popen]:
    return {"coordinator": start(run, "coordinator", "refresh"), "party_a": start(run, "party_a", "serve")}


def stop(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_served_answers_equal_the_offline_ones_and_need_no_other_role(trained: tuple[LocalRun, str],
                                                                        tmp_path: Path) -> None:
    run, base = trained
    shared, others = users_of(run)
    offline = command(run, "party_a", "recommend", "--k", str(K), "--out", str(tmp_path / "recs.parquet"))
    assert offline.returncode == 0, offline.stderr[-3000:]
    recs = pd.read_parquet(tmp_path / "recs.parquet")
    procs = services(run)
    try:
        health = wait_healthy(base, procs["party_a"])
        assert health["shared_users"] == len(shared)
        asked = shared[:25] + others[:15] + ["nobody-at-all"]
        served = answers(base, asked)
        model = Recommender.load(party_a_config.load(run.configs["party_a"]))  # as served: by segment
        for user in shared[:25] + others[:15]:
            row = model.row_of[model.normalise(user)]
            chosen = model.segments[segment_of(len(model.histories[row]))]
            assert served[user][0] == ("a_alone" if chosen == "federated" and user in others else chosen), user
        assert served["nobody-at-all"][0] == "popularity"
        for user in shared[:25] + others[:15]:
            mine = recs[recs["user_id"] == user].sort_values("rank")
            assert served[user][1] == list(zip(mine["item_id"], mine["score"])), user
            assert served[user][0] == mine["source"].iloc[0]
        single = get(f"{base}/v1/users/{shared[0]}/recommendations?k={K}")
        assert [(i["item_id"], i["score"]) for i in single["items"]] == served[shared[0]][1]
        bought = purchases(run)
        assert all(not {item for item, _ in served[u][1]} & bought.get(u, set()) for u in shared[:25] + others[:15])
        every = get(f"{base}/v1/users/{shared[0]}/recommendations?k={health['n_items']}&include_bought=true")
        assert len(every["items"]) == health["n_items"] and bought[shared[0]] <= {i["item_id"] for i in every["items"]}
        procs["coordinator"].kill()  # B runs no process while A serves; now the coordinator is gone too
        procs["coordinator"].wait()
        assert answers(base, asked) == served
    finally:
        stop(procs)


def changed_rows(run: LocalRun, users: list[str]) -> None:
    """Add 500 to the first numeric column of these shared users' rows in B's table."""
    cfg = party_b_config.load(run.configs["party_b"])
    frame, ids = cfg.users.load()
    row_of = {uid: r for r, uid in enumerate(ids)}
    path = cfg.users.table.path
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows = [row_of[u] for u in users]
    column = cfg.users.table.numeric[0]
    table.loc[rows, column] = (table.loc[rows, column].astype(float) + 500).astype(str)
    table.to_csv(path, index=False)


def test_refresh_changes_exactly_the_changed_users(trained: tuple[LocalRun, str]) -> None:
    run, base = trained
    shared, _ = users_of(run)
    store = next((run.workdir("party_a") / "models").glob("*/u.parquet"))
    procs = services(run)
    try:
        wait_healthy(base, procs["party_a"])
        before = answers(base, shared)
        u_before = pd.read_parquet(store)
        everyone = command(run, "party_b", "refresh", "--all")
        assert everyone.returncode == 0, everyone.stderr[-3000:]
        u_again = pd.read_parquet(store)
        if json.loads((store.parent / "manifest.json").read_text())["epochs"]["federated"] == 0:
            assert "does not read u; nothing to refresh" in everyone.stderr  # and releases nothing
            assert u_again.equals(u_before)
            return
        columns = [c for c in u_before.columns if c.startswith("u") and c != "user_id"]
        assert (u_again[columns].to_numpy() == u_before[columns].to_numpy()).all(), \
            "B's refresh of unchanged rows gave another u than training's chosen epoch"
        assert (u_again["written"] > u_before["written"]).all()

        picked = list(np.random.default_rng(0).choice(shared, size=10, replace=False))
        changed_rows(run, picked)
        refresh = command(run, "party_b", "refresh")
        assert refresh.returncode == 0, refresh.stderr[-3000:]
        assert "refreshed u of 10 of" in refresh.stderr
        time.sleep(1.5)  # the service looks for a new u store at most once a second
        u_after = pd.read_parquet(store).set_index("user_id")
        moved = (u_after[columns] != u_again.set_index("user_id").loc[u_after.index, columns]).any(axis=1)
        assert set(u_after.index[moved]) == set(picked)
        after = answers(base, shared)
        differ = {u for u in shared if after[u] != before[u]}
        federated = {u for u in picked if before[u][0] == "federated"}  # the other sources do not read u
        assert federated and differ == federated
        nothing = command(run, "party_b", "refresh")
        assert nothing.returncode == 0 and "nothing to refresh" in nothing.stderr
    finally:
        stop(procs)


def test_a_corrupt_store_stops_the_service_at_start_naming_the_file(trained: tuple[LocalRun, str]) -> None:
    run, _ = trained
    saved = next((run.workdir("party_a") / "models").glob("*/alone.pt"))
    original = saved.read_bytes()
    try:
        saved.write_bytes(original[: len(original) // 2])
        out = command(run, "party_a", "serve", timeout=120)
        assert out.returncode == 2, out.stderr[-2000:]
        assert f"{saved} is corrupt" in out.stderr and "Traceback" not in out.stderr
    finally:
        saved.write_bytes(original)


def test_a_refresh_of_another_model_is_refused_naming_both_ids(trained: tuple[LocalRun, str]) -> None:
    run, base = trained
    models = run.workdir("party_b") / "models"
    real = (models / "CURRENT").read_text().strip()
    other = f"{real}-other"
    shutil.copytree(models / real, models / other)
    manifest = json.loads((models / other / "manifest.json").read_text())
    # epoch 1 at least: B refreshes nothing for a model at epoch 0, and would not reach A to be refused
    (models / other / "manifest.json").write_text(json.dumps({**manifest, "model_id": other,
                                                              "epoch": max(1, manifest["epoch"])}))
    (models / "CURRENT").write_text(other)
    procs = services(run)
    try:
        wait_healthy(base, procs["party_a"])
        out = command(run, "party_b", "refresh", "--all")
        assert out.returncode != 0
        # a refresh session's run ID is the model's, so A's endpoint refuses B's first message at the door
        assert f"run '{other}/refresh', but this process runs '{real}/refresh'" in out.stderr, out.stderr[-2000:]
    finally:
        stop(procs)
        (models / "CURRENT").write_text(real)


def test_a_category_the_model_never_saw_is_refreshed_as_other_and_counted(trained: tuple[LocalRun, str]) -> None:
    """Three shared users' value of B's first categorical column becomes one the model never saw: B's refresh
    encodes it as the column's "other" level, says how many rows (never the value) and refreshes exactly them;
    restored after."""
    run, base = trained
    shared, _ = users_of(run)
    cfg = party_b_config.load(run.configs["party_b"])
    _, ids = cfg.users.load()
    path, manifest_path = cfg.users.table.path, next((run.workdir("party_b") / "models").glob("*/manifest.json"))
    table, manifest = path.read_bytes(), manifest_path.read_bytes()
    changed = pd.read_csv(path, dtype=str, keep_default_na=False)
    column = cfg.users.table.categorical[0]
    changed.loc[[ids.index(u) for u in shared[-3:]], column] = "band-the-model-never-saw"
    changed.to_csv(path, index=False)
    # epoch 1 at least: B refreshes nothing for a model at epoch 0 (the u it would send is not read)
    manifest_path.write_text(json.dumps({**json.loads(manifest), "epoch": max(1, json.loads(manifest)["epoch"])}))
    procs = services(run)
    try:
        wait_healthy(base, procs["party_a"])
        out = command(run, "party_b", "refresh")
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"column {column!r}: 3 values outside its" in out.stderr and "never-saw" not in out.stderr
        assert "refreshed u of 3 of" in out.stderr
    finally:
        path.write_bytes(table)
        back = command(run, "party_b", "refresh")  # B's stored digests as before the test
        manifest_path.write_bytes(manifest)
        stop(procs)
    assert back.returncode == 0 and "refreshed u of 3 of" in back.stderr, back.stderr[-3000:]


@pytest.fixture(scope="module")
def recommender(trained: tuple[LocalRun, str]) -> Recommender:
    torch.set_num_threads(1)  # as `recommend` and `serve` score
    return Recommender.load(party_a_config.load(trained[0].configs["party_a"]))


def everyone(recommender: Recommender) -> list[str]:
    """Every user of A, with two users A does not know among them."""
    _, ids = recommender.cfg.users.load()
    return ids[:70] + ["nobody-at-all"] + ids[70:] + ["nobody-either"]


def served_table(recommender: Recommender, users: list[str], include_bought: bool) -> pd.DataFrame:
    """The table `recommend` must write, from the answers of the HTTP path (`Recommender.recommend`)."""
    rows = []
    for answer in recommender.recommend(users, K, include_bought):
        rows += [{"user_id": answer.user_id, "rank": rank, "item_id": item.item_id, "score": item.score,
                  "source": answer.source, **item.columns} for rank, item in enumerate(answer.items, start=1)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def mixed(recommender: Recommender) -> Recommender:
    """The same models with every source in use: the most common segment served federated, the others by
    item-kNN (weights drawn here) and popularity; the models read one event, so a baseline that read only the
    model's history would score users with two or more events from too few."""
    forced = copy.copy(recommender)
    forced.history_length = 1
    common = Counter(segment_of(len(h)) for h in recommender.histories)
    forced.segments = dict(zip([name for name, _ in common.most_common()] +
                               [name for name, _, _ in SEGMENTS if name not in common],
                               ["federated", "item_knn", "popularity"]))
    weights = np.random.default_rng(0).random((recommender.n_items,) * 2)
    forced.catalogues = {**recommender.catalogues,
                         "item_knn": baseline_catalogue(recommender.width, np.zeros(recommender.n_items), weights)}
    forced.knn_weights = weights
    return forced


def test_each_segment_is_served_by_its_choice(mixed: Recommender) -> None:
    users = everyone(mixed)
    for answer in mixed.recommend(users, K):
        row = mixed.row_of.get(mixed.normalise(answer.user_id))
        if row is None:
            assert answer.source == "popularity"
            continue
        history = mixed.histories[row]
        chosen = mixed.segments[segment_of(len(history))]
        assert answer.source == ("a_alone" if chosen == "federated" and row not in mixed.store.u else chosen)
        if answer.source in ("item_knn", "popularity"):
            scores = mixed.knn_weights[history].sum(0) if answer.source == "item_knn" \
                else mixed.popularity.astype(np.float64)
            scores[history] = -np.inf
            index = {item: j for j, item in enumerate(mixed.item_ids)}
            served = np.array([index[i.item_id] for i in answer.items])
            got = np.array([i.score for i in answer.items])
            assert np.allclose(got, scores[served], rtol=1e-5), answer.user_id  # served in float32
            rest = np.delete(scores, served)
            assert len(served) == K and got.min() >= rest.max() - 1e-5 * abs(rest.max()), answer.user_id


def assert_same_bits(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert set(want.drop_duplicates("user_id")["source"]) == {"federated", "a_alone", "item_knn", "popularity"}
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got["score"].to_numpy().tobytes() == want["score"].to_numpy().tobytes()


@pytest.mark.parametrize("workers, include_bought", [(0, False), (2, False), (2, True)])
def test_recommend_on_local_workers_gives_the_served_bits(mixed: Recommender, workers: int,
                                                          include_bought: bool) -> None:
    users = everyone(mixed)
    with open_pool(Compute("local", workers), own="party_a") as pool:
        assert pool.size == workers
        got = recommend_all(mixed, users, K, include_bought, pool, progress=False)
    assert_same_bits(got, served_table(mixed, users, include_bought))


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    from scenarios.ray_cluster import local_cluster

    with local_cluster(head_cpus=2) as address:
        yield address


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")
def test_recommend_on_ray_gives_the_served_bits(mixed: Recommender, ray_address: str) -> None:
    users = everyone(mixed)
    with open_pool(Compute("ray", 2, ray_address), own="party_a") as pool:
        assert pool.size == 2
        got = recommend_all(mixed, users, K, False, pool, progress=False)
    assert_same_bits(got, served_table(mixed, users, False))



def copied_party_a(run: LocalRun, into: Path) -> tuple[party_a_config.PartyAConfig, str, str]:
    """A's directory (config, tables, store) copied, with its model stored again under a second ID (the manifest's
    model_id rewritten) and without a shared list (as before PSI kept one): A's config, and the two IDs (the one
    in service first)."""
    shutil.copytree(run.dir("party_a"), into, ignore=shutil.ignore_patterns("*.log", "wire"))
    cfg = party_a_config.load(into / "party_a.toml")
    shared_path(cfg.basics.workdir).unlink(missing_ok=True)
    models = cfg.basics.workdir / "models"
    first = (models / "CURRENT").read_text().strip()
    second = f"{first}-again"
    shutil.copytree(models / first, models / second)
    manifest = json.loads((models / second / "manifest.json").read_text())
    (models / second / "manifest.json").write_text(json.dumps({**manifest, "model_id": second,
                                                                "created": manifest["created"] + 1}))
    return cfg, first, second


def new_customer_like(cfg: party_a_config.PartyAConfig, like: str) -> str:
    """A new customer at A with `like`'s row and orders (another phone number), put in the u store with `like`'s u
    as B's refresh does for a user who joined the intersection; returns its normalised ID."""
    spec, interactions = cfg.users.table, cfg.training.interactions
    shop, bought = (pd.read_csv(p, dtype=str, keep_default_na=False) for p in (spec.path, interactions.path))
    phone = "+1 (999) 555-0101"  # area code 999: in no table
    for frame, column, path in ((shop, spec.id_column, spec.path),
                                (bought, interactions.user_column, interactions.path)):
        theirs = frame[[cfg.users.normalizer(v) == like for v in frame[column]]]
        pd.concat([frame, theirs.assign(**{column: phone})]).to_csv(path, index=False)
    joined = cfg.users.normalizer(phone)
    directory, _ = current_model(cfg.basics.workdir, "party_a")
    store = pd.read_parquet(directory / U_STORE)
    write_u_store(directory, pd.concat([store, store[store["user_id"] == like].assign(user_id=joined)],
                                       ignore_index=True))
    return joined


def test_the_service_follows_current_the_shared_list_and_new_customers_without_failing_a_request(
        trained: tuple[LocalRun, str], tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A's app (in process, a real Recommender of the trained model) under requests from four threads while
    CURRENT moves to a second stored model: no request fails, every answer and batch names one of the two models,
    and answers come from the new one within a few seconds, as do B's refresh sessions A takes. Then a new
    customer in A's tables and the u store, a shared list marking users inactive, and a model that fails to load
    (the old one keeps answering)."""
    cfg, first, second = copied_party_a(trained[0], tmp_path / "party_a")
    torch.set_num_threads(1)
    listener = RefreshListener(cfg).start()
    request.addfinalizer(listener.stop)
    app = create_app(Recommender.load(cfg), ServeSettings(), TOKEN.encode(), refresh_every=0.2,
                     load=lambda: Recommender.load(cfg), listener=listener)
    shared, others = users_of(trained[0])
    asked = shared[:8] + others[:4]
    seen: list[tuple[float, float, str, set[str], int]] = []  # start, end, batch model, answers' models, status
    stopping = threading.Event()

    def ask() -> None:
        client = TestClient(app, headers=AUTH)
        while not stopping.is_set():
            started = time.monotonic()
            r = client.post("/v1/recommendations", json={"users": asked, "k": K})
            body = r.json() if r.status_code == 200 else {}
            seen.append((started, time.monotonic(), body.get("model_id", ""),
                         {x["model_id"] for x in body.get("results", [])}, r.status_code))

    def served_by(model_id: str, timeout: float = 15) -> float:
        """Seconds until an answer named `model_id`."""
        begun = time.monotonic()
        while time.monotonic() - begun < timeout:
            if any(s[2] == model_id and s[0] > begun for s in list(seen)):
                return time.monotonic() - begun
            time.sleep(0.05)
        raise AssertionError(f"no answer from {model_id} within {timeout} s")

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        served_by(first)
        switched = time.monotonic()
        promote(cfg.basics.workdir, "party_a", second)
        took = served_by(second)
        assert took < 10, took
        time.sleep(0.5)
    finally:
        stopping.set()
        for t in threads:
            t.join()
    assert {s[4] for s in seen} == {200}
    assert all(s[3] == {s[2]} and s[2] in (first, second) for s in seen), "an answer names another model"
    assert all(s[2] == second for s in seen if s[0] > switched + took + 0.5), "the old model answered after the swap"
    assert all(s[2] == first for s in seen if s[1] < switched)
    deadline = time.monotonic() + 10
    while listener.endpoint is None or listener.endpoint.cfg.run_id != refresh_run_id(second):
        assert time.monotonic() < deadline, "A's refresh sessions still wait for the old model's"
        time.sleep(0.05)
    client = TestClient(app, headers=AUTH)
    metrics = client.get("/metrics").text
    assert f'vfrec_model_info{{model_id="{second}"}} 1.0' in metrics and f'model_id="{first}"' not in metrics
    assert 'vfrec_model_reloads_total{result="loaded"} 1.0' in metrics

    before = answers_of(client, shared)
    federated = [u for u in shared if before[u][0] == "federated"]
    assert federated, "no shared user is served federated: the trained model's segments chose none"
    leaving = federated[:3]
    joined = new_customer_like(cfg, federated[-1])  # no shared list: the u store's new user makes the reload
    got = eventually(client, [joined, federated[-1]], lambda got: got[joined][0] != "popularity")
    assert got[joined] == got[federated[-1]] and got[joined][0] == "federated"
    assert 'vfrec_model_reloads_total{result="loaded"} 2.0' in client.get("/metrics").text

    before = answers_of(client, shared)  # the new customer's orders moved item popularity
    normalise = cfg.users.normalizer
    stored = pd.read_parquet(current_model(cfg.basics.workdir, "party_a")[0] / U_STORE)["user_id"]
    write_shared(cfg.basics.workdir, pd.DataFrame({
        "position": np.arange(len(stored), dtype=np.int64), "user_id": stored,
        "active": [uid not in {normalise(u) for u in leaving} for uid in stored]}))
    after = eventually(client, shared, lambda got: got[leaving[0]][0] != "federated")
    assert {u: after[u][0] for u in leaving} == {u: "a_alone" for u in leaving}
    assert {u: after[u] for u in shared if u not in leaving} == {u: before[u] for u in shared if u not in leaving}
    assert client.get("/healthz").json()["shared_users"] == len(stored) - len(leaving)
    assert 'vfrec_model_reloads_total{result="loaded"} 3.0' in client.get("/metrics").text

    broken = cfg.basics.workdir / "models" / f"{first}-broken"
    shutil.copytree(cfg.basics.workdir / "models" / first, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "model_id": broken.name}))
    (broken / "alone.pt").write_bytes(b"not a state")  # whole (every file there), but it cannot load
    promote(cfg.basics.workdir, "party_a", broken.name)
    deadline = time.monotonic() + 15
    while 'vfrec_model_reloads_total{result="failed"} 1.0' not in client.get("/metrics").text:
        assert time.monotonic() < deadline, "the broken model's load did not fail"
        r = client.post("/v1/recommendations", json={"users": asked, "k": K})
        assert r.status_code == 200 and r.json()["model_id"] == second  # the old model answers meanwhile
        time.sleep(0.1)
    assert client.post("/v1/recommendations", json={"users": asked, "k": K}).json()["model_id"] == second
    rollback(cfg.basics.workdir, "party_a")
    assert client.post("/v1/recommendations", json={"users": asked, "k": K}).json()["model_id"] == second


def answers_of(client: TestClient, users: list[str]) -> dict[str, tuple[str, list[tuple[str, float]]]]:
    got = client.post("/v1/recommendations", json={"users": users, "k": K}).json()["results"]
    return {r["user_id"]: (r["source"], [(i["item_id"], i["score"]) for i in r["items"]]) for r in got}


def eventually(client: TestClient, users: list[str], done: Callable[[dict], bool], timeout: float = 15) -> dict:
    """The answers for `users` once `done` holds of them (the service reloads in the background)."""
    deadline = time.monotonic() + timeout
    while not done(got := answers_of(client, users)):
        assert time.monotonic() < deadline, f"not done within {timeout} s: {({u: a[0] for u, a in got.items()})}"
        time.sleep(0.1)
    return got


def customers_come_and_go(run: LocalRun, events: int, joined: int = 12,
                          leaving: int = 5) -> tuple[list[str], list[str]]:
    """New customers at both parties (A: user rows copied from others', each with `events` positive events copied
    from others'; B: rows copied from others', the first with a value of its first categorical column the model
    never saw), and shared customers who leave B. Returns the IDs of those who join (as A's table writes them) and
    of those who left (normalised)."""
    a, b = party_a_config.load(run.configs["party_a"]), party_b_config.load(run.configs["party_b"])
    spec = a.training.interactions
    a_table, b_table, log = (pd.read_csv(p, dtype=str, keep_default_na=False)
                             for p in (a.users.table.path, b.users.table.path, spec.path))
    digits = [f"{999_000_0000 + n}" for n in range(1, joined + 1)]  # area code 999: in neither table
    new_a = a_table.iloc[:joined].assign(**{a.users.table.id_column: [f"+1 {d}" for d in digits]})
    new_b = b_table.iloc[:joined].assign(**{b.users.table.id_column: [f"{d[:3]}-{d[3:6]}-{d[6:]}" for d in digits]})
    new_b.loc[new_b.index[0], b.users.table.categorical[0]] = "never-seen-level"
    positive = log if not spec.label_column else log[log[spec.label_column].astype(float) >= spec.threshold]
    new_log = pd.concat([positive.iloc[n * events:(n + 1) * events].assign(**{spec.user_column: user})
                         for n, user in enumerate(new_a[a.users.table.id_column])])
    shared, _ = users_of(run)
    left = shared[:leaving]
    _, b_ids = b.users.load()
    pd.concat([a_table, new_a]).to_csv(a.users.table.path, index=False)
    pd.concat([log, new_log]).to_csv(spec.path, index=False)
    pd.concat([b_table[[uid not in set(left) for uid in b_ids]], new_b]).to_csv(b.users.table.path, index=False)
    return list(new_a[a.users.table.id_column]), left


def test_customers_who_join_are_served_federated_after_a_delta_psi_and_a_refresh(
        trained: tuple[LocalRun, str]) -> None:
    """After training, customers join both parties and others leave B. A delta PSI and B's refresh later, the
    joined are served `federated` (their segment chose it) with the u a full refresh computes for them, a category
    the model never saw is served and counted, not refused, and those who left are served by A alone. This test
    changes the module's run, so it comes last."""
    run, base = trained
    directory = next((run.workdir("party_a") / "models").glob("*/u.parquet")).parent
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["epochs"]["federated"] > 0, "the module's model must read u (story 2 leaves epoch 0 by far)"
    federated = [low for name, low, _ in SEGMENTS if manifest["segments"][name] == "federated"]
    assert federated, f"no segment of the trained model chose the federated model: {manifest['segments']}"
    joined, left = customers_come_and_go(run, max(1, federated[0]))
    psi = {role: start(run, role, "psi", "--delta") for role in ("party_a", "party_b")}
    out = wait_all(run, psi, timeout=120)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    procs = services(run)
    try:
        wait_healthy(base, procs["party_a"])
        refresh = command(run, "party_b", "refresh")
        assert refresh.returncode == 0, refresh.stderr[-3000:]
        assert f"{len(joined)} users joined the intersection since it was trained" in refresh.stderr
        assert f", {len(left)} left" in refresh.stderr
        assert "1 values outside its" in refresh.stderr and "never-seen-level" not in refresh.stderr
        deadline = time.monotonic() + 60
        while (served := answers(base, joined + left)) and time.monotonic() < deadline and \
                any(served[u][0] == "popularity" for u in joined):
            time.sleep(0.5)  # the service reloads A's tables and the u store in the background
        assert {served[u][0] for u in joined} == {"federated"}, served
        assert all(served[u][0] != "federated" for u in left), served
        store = pd.read_parquet(directory / "u.parquet").set_index("user_id")
        normalise = party_a_config.load(run.configs["party_a"]).users.normalizer
        ids = [normalise(u) for u in joined]
        columns = [c for c in store.columns if c.startswith("u")]
        first = store.loc[ids, columns].to_numpy()
        assert np.abs(first).sum(axis=1).min() > 0
        again = command(run, "party_b", "refresh", "--all")
        assert again.returncode == 0, again.stderr[-3000:]
        recomputed = pd.read_parquet(directory / "u.parquet").set_index("user_id").loc[ids, columns].to_numpy()
        assert (recomputed == first).all(), "a joined user's first u differs from what a full refresh computes"
    finally:
        stop(procs)

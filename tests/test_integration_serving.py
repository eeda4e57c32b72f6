"""Serving a trained model through real processes: A's HTTP service, the offline `recommend`, and B's refresh.

Story 1 is trained briefly (three processes, 2048-bit key); then the coordinator's
refresh service and A's `serve` run as processes, and B's `refresh` runs as one when
asked. Served answers must equal the offline ones bit for bit, keep coming with the
coordinator killed (B runs no process while A serves), and after B changes 10 shared
users' rows and refreshes, exactly those users' answers change. `recommend`'s table
is the same bits inline, on two local worker processes and on a local Ray cluster.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from party_a import config as party_a_config
from party_a.recommend import recommend_all
from party_a.scoring import baseline_catalogue
from party_a.segments import SEGMENTS, segment_of
from party_a.serving import Recommender
from party_b import config as party_b_config
from protocol.crypto.keyfiles import write_private
from protocol.runtime.compute import open_pool
from protocol.runtime.config import Compute
from scenarios import ecommerce_bank
from scenarios.launch import LocalRun, free_ports, run_all, start
from scenarios.launch import ROOT, _env

pytestmark = pytest.mark.integration
K = 10
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalRun, str]:
    root = tmp_path_factory.mktemp("serving")
    run = ecommerce_bank.prepare(root, users=600, epochs=3, seed=3, progress=False, batch_users=32)
    out = run_all(run, timeout=600)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    port = free_ports(1)[0]
    token_file = run.dir("party_a") / "serve.token"
    write_private(token_file, TOKEN.encode())
    with open(run.configs["party_a"], "a") as f:
        f.write(f'\n[serve]\nlisten = "127.0.0.1:{port}"\ntoken_file = "serve.token"\n')
    return run, f"http://127.0.0.1:{port}"


def get(url: str) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=10) as response:
        return json.loads(response.read())


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **AUTH})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the service stopped while starting"
        try:
            return get(f"{base}/healthz")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise AssertionError(f"no answer from {base}/healthz within {timeout}s")


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
        assert all(not {item for item, _ in served[u][1]} & bought[u] for u in shared[:25] + others[:15])
        every = get(f"{base}/v1/users/{shared[0]}/recommendations?k={health['n_items']}&include_bought=true")
        assert len(every["items"]) == health["n_items"] and bought[shared[0]] <= {i["item_id"] for i in every["items"]}
        procs["coordinator"].kill()  # B runs no process while A serves; now the coordinator is gone too
        procs["coordinator"].wait()
        assert answers(base, asked) == served
    finally:
        stop(procs)


def changed_rows(run: LocalRun, users: list[str]) -> None:
    """Add 500 to one spending column of these shared users' rows in B's table."""
    cfg = party_b_config.load(run.configs["party_b"])
    frame, ids = cfg.users.load()
    row_of = {uid: r for r, uid in enumerate(ids)}
    path = cfg.users.table.path
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows = [row_of[u] for u in users]
    table.loc[rows, "spend_books"] = (table.loc[rows, "spend_books"].astype(float) + 500).astype(str)
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
    """Three shared users' age band at B becomes a value the model never saw: B's refresh encodes it as the
    column's "other" level, says how many rows (never the value) and refreshes exactly them; restored after."""
    run, base = trained
    shared, _ = users_of(run)
    cfg = party_b_config.load(run.configs["party_b"])
    _, ids = cfg.users.load()
    path, manifest_path = cfg.users.table.path, next((run.workdir("party_b") / "models").glob("*/manifest.json"))
    table, manifest = path.read_bytes(), manifest_path.read_bytes()
    changed = pd.read_csv(path, dtype=str, keep_default_na=False)
    changed.loc[[ids.index(u) for u in shared[-3:]], "age_band"] = "band-the-model-never-saw"
    changed.to_csv(path, index=False)
    # epoch 1 at least: B refreshes nothing for a model at epoch 0 (the u it would send is not read)
    manifest_path.write_text(json.dumps({**json.loads(manifest), "epoch": max(1, json.loads(manifest)["epoch"])}))
    procs = services(run)
    try:
        wait_healthy(base, procs["party_a"])
        out = command(run, "party_b", "refresh")
        assert out.returncode == 0, out.stderr[-3000:]
        assert "column 'age_band': 3 values outside its" in out.stderr and "never-saw" not in out.stderr
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

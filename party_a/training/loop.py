"""A's training driver. A decides every step; B and the coordinator follow.

Before training A fits its single-party baselines (popularity, item-kNN, EASE with
λ chosen on validation) on its own events and scores them on the validation and
test lists, then trains A alone in plaintext to its epoch chosen on validation
(party_a/training/alone.py). The federated model starts as that model with B's contribution
at zero (party_a/models/model.py) and is offered as it starts (epoch 0). Per epoch it
trains batch by batch through the secure layer (protocol/layer/steps.py
TRAINING_STEP), learning only how much of B's u enters (A's own part stays A
alone's) while B's tower and W learn from δ; then u is computed for every shared
user (FORWARD_ONLY, so B learns nothing about who is evaluated) and the model is
scored on the validation lists. Its epoch is chosen by early stopping on validation
NDCG@k (party_a/models/selection.py); the test lists are scored for an epoch only while it
is the best so far, so only the chosen epoch's test metrics are ever reported. The
report (JSON) holds all of it.

Checkpoints (party_a/training/checkpoint.py): right after [W0], every [checkpoint] every_steps
steps inside an epoch and after each epoch's evaluation, A proposes one to B and the
coordinator, writes its own and waits for both (`checkpoint`). `resume_training` goes
on from one: the batches come from the sampler's (seed, epoch), so a resumed run
trains on the batches an uninterrupted one would have.

A warm start (`--from current`, party_a/training/warm.py) takes the model in service instead
of starting afresh: A alone trains on from the stored one, the federated model starts
as the stored one with the stored [W], and its epoch 0 is that model validated on this
run's lists through the secure layer; both train for at most [train] warm_epochs. The
new model is always stored, and put in service (at all three roles: A says so in
Finish and RunDone) only if its chosen epoch is not 0, that is, if it validated
significantly better than the model in service on the new lists.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from party_a.training import checkpoint as a_checkpoint
from party_a.config import Training
from party_a.data.tables import ActiveData
from party_a.training.alone import Alone, train_alone
from party_a.models.baselines import Baseline, chosen_ease_lambda, fit_baselines
from party_a.models.evaluate import EvalSet, evaluation_lists, metrics, per_user
from party_a.models.model import ActiveModel, model_scores
from party_a.data.sampler import Sampler
from party_a.serving.store import save_active_model
from party_a.training.warm import Start
from party_a.training.choice import Models
from party_a.training.layer import forward_all, secure_step, start_layer
from party_a.training.report import metrics_line, new_report, segment_report
from protocol import messages
from protocol import observe
from protocol.compute.workers import WorkerPool
from protocol.crypto.packing import Packed
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.data.stored import state_bytes
from protocol.data.tables import Encoding
from protocol.errors import ConfigError, ProtocolError
from protocol.layer.decryption import train_label
from protocol.layer.steps import Side
from protocol.layer.timing import StepClock
from protocol.messages.commands import Checkpoint, Keep
from protocol.messages.run import CheckpointDone, CoordinatorCheckpoint
from protocol.net.transport import Endpoint
from protocol.roles import B, C
from protocol.runtime.checkpoint import CheckpointSettings
from protocol.runtime.progress import progress_bar
from protocol.runtime.resume import Agreed
from protocol.store.models import atomic_write, new_model_id, private_dir
from protocol.wire.codec import encode

log = logging.getLogger(__name__)

def evaluate_epoch(side: Side, models: Models, data: ActiveData, lists: dict[str, EvalSet], entry: dict, k: int,
                   clock: StepClock, generation: int = 0) -> None:
    """Score the federated model on the validation lists (u from B for every shared user) into `entry`, and offer
    the scores to its epoch choice. When it improves, B is told to keep its state of this epoch (the one to save
    and serve)."""
    valid = lists["valid"]
    u_all = forward_all(side, entry["epoch"], data.n_users, clock, generation)
    if models.defence.received is not None:
        models.defence.received.add("u_eval", entry["epoch"], 0, np.arange(data.n_users), u_all)
    scores = model_scores(models.federated, valid, u_all)
    entry["federated"] = metrics(scores, valid.cold, k)
    if models.selected.update(per_user(scores, k)[2], models.federated, u_all, side.w):
        messages.send(side.endpoint, B, Keep(entry["epoch"]))


def offer_start(side: Side, models: Models, alone: Alone, n_users: int) -> None:
    """Offer the federated model as it starts (A alone with P = 0: u does not enter) as epoch 0, with A alone's
    validation metrics; B keeps its starting state for it."""
    zeros = np.zeros((n_users, side.plan.h), dtype=np.float32)
    models.selected.update(alone.valid_ndcg, models.federated, zeros, side.w)
    messages.send(side.endpoint, B, Keep(0))


def offer_model_in_service(loop: Loop, start: Start) -> dict:
    """A warm start's epoch 0: the federated model as stored, validated on this run's lists with u from B's stored
    tower and [W] (an evaluation forward for every shared user), offered to its epoch choice; B keeps its start for
    it. Returns the report's "warm_start"."""
    entry: dict = {"epoch": 0}
    loop.clock.restart()
    evaluate_epoch(loop.side, loop.models, loop.data, loop.lists, entry, loop.cfg.eval.k, loop.clock)
    log.info("epoch 0 (model %s as in service), validation: %s", start.model_id,
             metrics_line("federated", entry["federated"], loop.cfg.eval.k))
    return {"from": start.model_id, "valid": entry["federated"]}


@dataclass
class Progress:
    """Where training is: the training steps done in all (a checkpoint's ID), the epoch in progress with its batches
    done and their losses, and the seconds spent in secure training and in checkpoints."""

    step: int = 0
    epoch: int = 1
    batch: int = 0
    losses: list[float] = field(default_factory=list)
    secure_seconds: float = 0.0
    user_steps: int = 0
    checkpoint_seconds: float = 0.0
    checkpoints: int = 0


@dataclass
class Loop:
    """What A's training loop works with; `generation` goes into every label (protocol/runtime/resume.py)."""

    side: Side
    models: Models
    data: ActiveData
    lists: dict[str, EvalSet]
    baselines: list[Baseline]
    sampler: Sampler
    report: dict
    progress: Progress
    cfg: Training
    workdir: Path
    checkpoints: CheckpointSettings
    clock: StepClock
    generation: int = 0

    @property
    def epochs(self) -> int:
        """The most epochs the federated model trains: [train] warm_epochs for a warm start, else epochs."""
        return self.cfg.train.warm_epochs if "warm_start" in self.report else self.cfg.train.epochs


def run_training(endpoint: Endpoint, public: PublicKey, pool: WorkerPool, data: ActiveData, cfg: Training,
                 workdir: Path, names: Names, checkpoints: CheckpointSettings, start: Start | None = None) -> dict:
    """Train A alone, then the federated model from it epoch by epoch, choose each one's epoch on validation,
    report the chosen epochs' test metrics next to A's baselines, and store the chosen models as a new model
    version (its ID in the report's "model"). Checkpoints at step 0 (right after [W0] and A alone) and as
    [checkpoint] says. With `start` (a warm start), from the model in service (module docstring)."""
    torch.set_num_threads(1)
    side = start_layer(endpoint, public, pool, cfg, data.n_users, None if start is None else start.w_cols(public))
    e = cfg.eval
    lists = evaluation_lists(data, cfg)
    baselines = fit_baselines(data, lists["valid"], e.k)
    lam = chosen_ease_lambda(baselines) if start is None else start.ease_lambda
    report = {**new_report(data, lists, baselines, cfg, side), "ease_lambda": lam}
    for b in baselines:
        log.info("%s (%s): %s", b.name, b.setting, metrics_line("test", report["baselines"][b.name]["test"], e.k))
    log.info("training on %d shared users, %d items; validating on %d users, testing %d users (%d cold)",
             data.n_users, data.n_items, lists["valid"].users.size, lists["test"].users.size,
             lists["test"].cold.sum())
    stored = None if start is None else (start.alone(data, cfg.model, names.items), start.prior_weight)
    alone = train_alone(data, cfg, lists["valid"], lists["test"], lam, cfg.train.progress, stored)
    report["a_alone"] = alone.summary()
    if start is None:
        log.info("A alone's popularity prior: weight %g, chosen on validation (NDCG@%d %s)", alone.prior_weight, e.k,
                 ", ".join(f"{w:g}: {v:.4f}" for w, v in alone.tried.items()))
    log.info("A alone, trained in plaintext: %s; %s", alone.stopper.choice().reason,
             metrics_line("test", alone.test, e.k))
    models = Models.build(data, cfg, lam, alone.prior_weight, lists["test"], alone.model, workdir,
                          endpoint.cfg.run_id, None if start is None else start.federated(alone.model, names.items))
    loop = Loop(side, models, data, lists, baselines, _sampler(data, cfg), report, Progress(), cfg, workdir,
                checkpoints, StepClock(endpoint))
    if start is None:
        offer_start(side, models, alone, data.n_users)
        log.info("epoch 0 (the federated model as it starts: A alone), validation: %s",
                 metrics_line("federated", alone.valid, e.k))
    else:
        report["warm_start"] = offer_model_in_service(loop, start)
    checkpoint(loop)
    return train_and_store(loop, names)


def resume_training(endpoint: Endpoint, pool: WorkerPool, data: ActiveData, cfg: Training, workdir: Path,
                    names: Names, checkpoints: CheckpointSettings, agreed: Agreed, pinned: str | None) -> dict:
    """Go on from A's checkpoint at the agreed step, in the agreed generation, as `run_training` would have."""
    torch.set_num_threads(1)
    saved = a_checkpoint.load(workdir, endpoint.cfg.run_id, agreed.step, pinned)
    if dataclasses.replace(cfg.plan(), key_fingerprint=saved.public.fingerprint) != saved.plan:
        raise ConfigError(f"the plan of A's config differs from the plan of its checkpoints ({saved.plan}): resume "
                          f"with the config the run was started with")
    side = Side(endpoint, saved.public, Encryptor(saved.public, cfg.secure.encryption), pool, saved.plan,
                saved.w_cols)
    lists, info = evaluation_lists(data, cfg), saved.info
    report = info["report"]
    models = Models.build(data, cfg, report["ease_lambda"], report["a_alone"]["prior_weight"], lists["test"],
                          workdir=workdir, run_id=endpoint.cfg.run_id)
    models.restore(saved)
    baselines = fit_baselines(data, lists["valid"], cfg.eval.k)
    loop = Loop(side, models, data, lists, baselines, _sampler(data, cfg), report, Progress(**info["progress"]), cfg,
                workdir, checkpoints, StepClock(endpoint), agreed.generation)
    return train_and_store(loop, names)


def _sampler(data: ActiveData, cfg: Training) -> Sampler:
    return Sampler(data, cfg.train.batch_users, cfg.model.history, cfg.train.targets, cfg.train.seed)


def checkpoint(loop: Loop) -> None:
    """Have B and the coordinator write their checkpoints of this step boundary, write A's meanwhile, and wait for
    both to confirm: then all three hold it."""
    started, p, endpoint = time.perf_counter(), loop.progress, loop.side.endpoint
    messages.send(endpoint, B, Checkpoint(p.step))
    messages.send(endpoint, C, CoordinatorCheckpoint(p.step))
    torch_states, arrays = loop.models.state()
    noise = loop.models.defence.noise
    info = {"progress": dataclasses.asdict(p), "report": loop.report, "chosen": loop.models.choice(),
            "noise": None if noise is None else noise.state()}
    a_checkpoint.save(loop.workdir, endpoint.cfg.run_id, p.step, loop.checkpoints.keep,
                      a_checkpoint.Saved(loop.side.plan, loop.side.public, loop.side.w, torch_states, arrays, info,
                                         loop.models.selected.w))
    for peer in (B, C):
        done = messages.receive(endpoint, peer, CheckpointDone)
        if done.step != p.step:
            raise ProtocolError(f"{peer} confirmed the checkpoint of step {done.step}; A proposed step {p.step}")
    p.checkpoint_seconds += time.perf_counter() - started
    p.checkpoints += 1
    log.info("checkpoint at step %d held by all three (%.2fs)", p.step, time.perf_counter() - started)


def train_epochs(loop: Loop) -> None:
    """Train from where `loop.progress` is until the last epoch or early stopping, checkpointing every [checkpoint]
    every_steps steps inside an epoch and after each epoch's evaluation."""
    p, cfg, models, k = loop.progress, loop.cfg, loop.models, loop.cfg.eval.k
    every = loop.checkpoints.every_steps
    while p.epoch <= loop.epochs and not models.selected.stopper.should_stop():
        epoch, started = p.epoch, time.perf_counter()
        n_batches = loop.sampler.batches_per_epoch
        loop.clock.restart()
        bar = progress_bar(total=n_batches, initial=p.batch, task="epoch", desc=f"epoch {epoch}/{loop.epochs}",
                           unit="batch", enabled=cfg.train.progress, leave=False)
        for b, batch in enumerate(loop.sampler.epoch(epoch)):
            if b < p.batch:  # done before the checkpoint this run resumed from
                continue
            p.losses.append(secure_step(loop.side, train_label(epoch, b, loop.generation), batch, models.federated,
                                        models.optimizer, loop.clock, models.defence, epoch,
                                        (epoch - 1) * n_batches + b))
            p.step, p.batch = p.step + 1, b + 1
            bar.update()
            bar.set_postfix(loss=f"{np.mean(p.losses):.4f}")
            if every and p.step % every == 0 and p.batch < n_batches:
                p.secure_seconds += time.perf_counter() - started
                checkpoint(loop)
                started = time.perf_counter()
        bar.close()
        p.secure_seconds += time.perf_counter() - started
        p.user_steps += loop.data.n_users
        entry: dict = {"epoch": epoch, "loss": {"federated": float(np.mean(p.losses))}}
        loop.clock.restart()
        evaluate_epoch(loop.side, models, loop.data, loop.lists, entry, k, loop.clock, loop.generation)
        entry["seconds"] = round(time.perf_counter() - started, 2)
        loop.report["epochs"].append(entry)
        log.info("epoch %d/%d (%.0fs), validation: %s", epoch, loop.epochs, entry["seconds"],
                 metrics_line("federated", entry["federated"], k))
        observe.validated({name if name == "auc" else f"{name}@{k}": value
                           for name, value in entry["federated"]["overall"].items() if name != "users"})
        p.epoch, p.batch, p.losses = epoch + 1, 0, []
        checkpoint(loop)


def train_and_store(loop: Loop, names: Names) -> dict:
    """Train to the end (`train_epochs`), then report and store the chosen models."""
    train_epochs(loop)
    report, p, models, k = loop.report, loop.progress, loop.models, loop.cfg.eval.k
    alone = report["a_alone"]
    report["chosen"] = {"federated": models.selected.summary(),
                        "a_alone": {"epoch": alone["epoch"], "reason": alone["reason"], "test": alone["test"]}}
    for name, c in report["chosen"].items():
        log.info("%s: %s; %s", name, c["reason"], metrics_line("test", c["test"], k))
    report["segments"] = segment_report(models, loop.baselines, loop.lists, k)
    log.info("per segment, chosen on validation: %s; %s", ", ".join(
        f"{name}: {source}" for name, source in report["segments"]["choice"].items()),
        metrics_line("test", report["segments"]["combined"], k))
    report["timing"] = {"secure_training_seconds": round(p.secure_seconds, 2), "user_steps": p.user_steps,
                        "user_steps_per_second": round(p.user_steps / p.secure_seconds, 2) if p.secure_seconds
                        else None, "checkpoints": p.checkpoints, "checkpoint_seconds": round(p.checkpoint_seconds, 3),
                        "phases": loop.clock.summary()}
    report["privacy"] = models.defence.spent()
    if models.defence.received is not None:
        log.info("what A received per user written to %s", models.defence.received.write(loop.workdir,
                                                                                       report["privacy"]))
    if models.defence.noise is not None:
        log.info("noise on δ: %d releases per user spend ε = %.3f at δ = %g", report["privacy"]["releases_per_user"],
                 report["privacy"]["epsilon"], report["privacy"]["dp_delta"])
    save_last_state(loop.workdir, models.federated, loop.side.w)
    warm, promote = report.get("warm_start"), promoted(report)
    report["model"] = store_chosen(loop.workdir, loop.side.endpoint.cfg.run_id, models, names, report, loop.cfg,
                                   loop.side, loop.baselines, promote)
    log.info("model %s stored (federated epoch %d, A alone epoch %d)%s", report["model"]["id"],
             report["chosen"]["federated"]["epoch"], report["chosen"]["a_alone"]["epoch"],
             "" if promote else f"; not put in service: it validated no better than model {warm['from']}, which stays")
    return report


def promoted(report: dict) -> bool:
    """Whether the run's model goes in service: always from scratch; from a warm start only if its chosen epoch is
    not 0, the model in service, that is, if it validated significantly better on the run's lists."""
    return "warm_start" not in report or report["chosen"]["federated"]["epoch"] != 0


@dataclass(frozen=True)
class Names:
    """A's IDs of the shared users (in the aligned order) and of the items (in the models' order), and how its user
    and item columns were encoded (to be stored with the model)."""

    shared_users: list[str]
    items: list[str]
    encodings: dict[str, Encoding] = field(default_factory=dict)


def store_chosen(workdir: Path, run_id: str, models: Models, names: Names, report: dict, cfg: Training,
                 side: Side, baselines: list[Baseline], promote: bool = True) -> dict:
    """Store both models at their chosen epochs, with the u the federated one was validated with and [W] by
    columns, each activity segment's choice, item-kNN's weights if a segment chose it, the served model's
    validation and test metrics (each segment by its choice) and the noise defence's ε; in service if `promote`."""
    model_id = new_model_id(run_id)
    choice = report["segments"]["choice"]
    warm = report.get("warm_start")
    manifest = {"run_id": run_id, "created": time.time(), "key_fingerprint": side.public.fingerprint,
                "plan": side.plan.to_message(), "model_settings": dataclasses.asdict(cfg.model),
                "ease_lambda": report["ease_lambda"], "prior_weight": report["a_alone"]["prior_weight"],
                "items": len(names.items), "shared_users": len(names.shared_users), "segments": choice,
                "encodings": {name: e.to_json() for name, e in names.encodings.items()},
                "started_from": None if warm is None else warm["from"],
                "epochs": {name: c["epoch"] for name, c in report["chosen"].items()},
                "metrics": {"k": cfg.eval.k, "valid": report["segments"]["combined_valid"],
                            "test": report["segments"]["combined"]}, "privacy": report["privacy"]}
    states = {"federated": models.selected.state, "a_alone": models.alone.state_dict()}
    item_knn = next(b.table for b in baselines if b.name == "item_knn") if "item_knn" in choice.values() else None
    save_active_model(workdir, model_id, manifest, states, names.items, names.shared_users, models.selected.u,
                      item_knn, models.selected.w, promote)
    return {"id": model_id, "epoch": report["chosen"]["federated"]["epoch"], "promoted": promote}


def save_last_state(workdir: Path, model: ActiveModel, w_cols: Packed) -> None:
    """A's state after the last step (not necessarily a chosen epoch's): its model (a torch state that
    protocol.data.stored.load_state reads) and its [W] by columns; what the exactness tests compare with a
    plaintext twin."""
    out = workdir / "model"
    private_dir(out)
    atomic_write(out / "active.pt", state_bytes(model.state_dict()))
    atomic_write(out / "w_cols.msgpack", encode(w_cols.to_wire().to_message()))

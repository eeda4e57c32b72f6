"""One federated experiment end to end: three processes, then the centralised baseline, one report.

Writes to the run directory:
- report.json: party A's report (A's baselines, A alone and then the federated model
  per epoch on validation, each model's chosen epoch with its test metrics, every
  scorer per activity segment with each segment's choice, timing, PSI) with the
  centralised baseline added (same split, batches, seeds, initial W, start and epoch
  rule as the federated model) and the joint plaintext anchors (scenarios/anchors.py:
  what B's columns give with both tables in one place);
- curves.png: validation AUC, HR@k and NDCG@k per epoch, overall and for cold
  users: A alone from its start, then the federated and centralised models from A
  alone's chosen epoch, with A's baselines as reference lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from coordinator import config as coordinator_config
from protocol.crypto import fixedpoint, packing
from protocol.crypto.paillier import DEFAULT_BITS, PrivateKey, read_private_key
from protocol.messages.plan import LayerPlan
from protocol.wire.codec import decode
from party_a.models.evaluate import evaluation_lists
from scenarios.anchors import fit_anchors
from scenarios.centralised import PlainLayer, load_joined, train
from scenarios.launch import LocalRun, run_all, set_compute, write_local_run

BASELINES = (("popularity", "popularity"), ("item_knn", "item-kNN"), ("ease", "EASE"))
MODELS = (("a_alone", "A alone"), ("federated", "federated"), ("centralised", "centralised"))
ANCHORS = (("joint_ease", "joint EASE"), ("user_knn_b", "user-kNN B"))


def metric_names(report: dict) -> tuple[tuple[str, str], ...]:
    k = report["eval"]["k"]
    return ("auc", "AUC"), ("hr", f"HR@{k}"), ("ndcg", f"NDCG@{k}")


class ExperimentError(RuntimeError):
    pass


def coordinator_key(run: LocalRun) -> PrivateKey:
    """The coordinator's private key of this run, read as the coordinator reads it (playing all roles)."""
    cfg = coordinator_config.load(run.configs["coordinator"])
    return read_private_key(cfg.key_file, cfg.key_passphrase)


def decrypt_saved(run: LocalRun, role: str, name: str) -> np.ndarray:
    """An encrypted W a party saved (`<workdir>/model/<name>.msgpack`), decrypted with the coordinator's key.

    Only an experiment that holds all three roles can do this: no party can."""
    key = coordinator_key(run)
    saved = run.workdir(role) / "model" / f"{name}.msgpack"
    return packing.decrypt(key, packing.Packed.from_message(decode(saved.read_bytes()), key.public, saved.name))


def federated_w0(run: LocalRun, plan: LayerPlan) -> np.ndarray:
    """The W0 the federated run drew as secret shares, so the centralised baseline starts where it started
    and the two differ only by the secure layer's fixed point and rounding."""
    return fixedpoint.decode(decrypt_saved(run, "party_b", "w_rows_init"), plan.w_bits)


def run_experiment(run: LocalRun, timeout: float = 3600.0, stream: bool = True) -> dict:
    """Run coordinator, A and B as processes, then the centralised baseline on the same split."""
    started = time.perf_counter()
    outcomes = run_all(run, timeout, stream="party_a" if stream else None)
    failed = {role: o for role, o in outcomes.items() if o.returncode != 0}
    if failed:
        detail = "\n".join(f"--- {role} (exit {o.returncode}):\n{o.output[-2500:]}" for role, o in failed.items())
        raise ExperimentError(f"the run in {run.root} failed:\n{detail}")
    federated_seconds = time.perf_counter() - started
    report = json.loads((run.workdir("party_a") / "report.json").read_text())
    joined = load_joined(run.configs["party_a"], run.configs["party_b"])
    plan = joined.training.plan()
    centralised = train(joined.data, joined.b_features, joined.training, joined.tower,
                        PlainLayer(federated_w0(run, plan), plan.lr_w),
                        ease_lambda=report["baselines"]["ease"]["chosen"])
    for entry, extra in zip(report["epochs"], centralised.report):  # the two stop apart: one may have more epochs
        entry["centralised"] = extra["valid"]
        entry["loss"]["centralised"] = extra["loss"]
    report["chosen"]["centralised"] = {"epoch": centralised.choice.epoch, "reason": centralised.choice.reason,
                                       "test": centralised.test}
    lists = evaluation_lists(joined.data, joined.training)
    report["anchors"] = fit_anchors(joined.data, joined.b_features, lists["valid"], lists["test"],
                                    joined.training.eval.k)
    report["wall_seconds"] = {"federated_run": round(federated_seconds, 1),
                              "total": round(time.perf_counter() - started, 1)}
    (run.root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_curves(report, run.root / "curves.png")
    return report


def final(report: dict, model: str) -> dict:
    """A model's test metrics: a baseline's or an anchor's, or our model's at the epoch chosen on validation."""
    for group in ("baselines", "anchors", "chosen"):
        if model in report.get(group, {}):
            return report[group][model]["test"]
    raise KeyError(f"no test metrics for {model!r} in the report")


def summary_table(report: dict) -> str:
    """The result table: each model's test metrics (ours at the epoch chosen on validation), overall and cold."""
    metrics = metric_names(report)
    head = f"{'model':<12} | " + " ".join(f"{n:>8}" for _, n in metrics) + " | " + \
        " ".join(f"{'cold ' + n:>12}" for _, n in metrics)
    lines = [head, "-" * len(head)]
    for key, name in BASELINES + MODELS + (ANCHORS if "anchors" in report else ()):
        if key == ANCHORS[0][0]:
            lines.append("joint plaintext anchors (both tables in one place; no party can run these):")
        m = final(report, key)
        cells = [f"{m['overall'][k]:8.4f}" for k, _ in metrics]
        cold = [f"{m['cold'][k]:12.4f}" if m["cold"]["users"] else f"{'-':>12}" for k, _ in metrics]
        lines.append(f"{name:<12} | " + " ".join(cells) + " | " + " ".join(cold))
    fed, alone, cent = (final(report, k) for k in ("federated", "a_alone", "centralised"))
    lines.append("")
    for scope in ("overall", "cold"):
        if fed[scope]["users"]:
            lines.append(f"{scope:>7}: federated vs A alone AUC {fed[scope]['auc'] - alone[scope]['auc']:+.4f}, "
                         f"{metrics[1][1]} {fed[scope]['hr'] - alone[scope]['hr']:+.4f}, {metrics[2][1]} "
                         f"{fed[scope]['ndcg'] - alone[scope]['ndcg']:+.4f}; vs centralised AUC "
                         f"{fed[scope]['auc'] - cent[scope]['auc']:+.4f} ({fed[scope]['users']} users)")
    lines += [f"{name}: {report['chosen'][key]['reason']}" for key, name in MODELS]
    return "\n".join(lines)


def curve(report: dict, model: str) -> list[tuple[int, dict]]:
    """(x, validation metrics) per epoch of a model: A alone's epochs from 0, then the federated and centralised
    models' epochs after A alone's chosen one, where they start."""
    alone = report["a_alone"]
    if model == "a_alone":
        return [(e["epoch"], e["valid"]) for e in alone["epochs"]]
    return [(alone["epoch"], alone["valid"])] + [(alone["epoch"] + e["epoch"], e[model]) for e in report["epochs"]
                                                 if model in e]


SEGMENT_MODELS = BASELINES + MODELS[:2]


def segment_table(report: dict) -> str:
    """Test HR@k and NDCG@k per activity segment for every scorer, and for each segment's choice on validation."""
    seg, k = report["segments"], report["eval"]["k"]
    names = list(seg["choice"])
    head = f"{'model':<12} | " + " | ".join(f"{n + ' (' + str(seg['test']['a_alone'][n]['users']) + ' users)':>19}"
                                           for n in names)
    lines = [f"test HR@{k} / NDCG@{k} by training events at A", head, "-" * len(head)]

    def cell(m: dict) -> str:
        return f"{m['hr']:.4f} / {m['ndcg']:.4f}" if m["users"] else "-"

    for key, name in SEGMENT_MODELS:
        lines.append(f"{name:<12} | " + " | ".join(f"{cell(seg['test'][key][n]):>19}" for n in names))
    lines.append(f"{'chosen':<12} | " + " | ".join(f"{seg['choice'][n]:>19}" for n in names))
    both = seg["combined"]["overall"]
    lines.append(f"each segment served by its choice: HR@{k} {both['hr']:.4f}, NDCG@{k} {both['ndcg']:.4f}")
    return "\n".join(lines)


def plot_curves(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for row, scope in enumerate(("overall", "cold")):
        for col, (key, name) in enumerate(metric_names(report)):
            ax = axes[row, col]
            for model, label in MODELS:
                shown = [(x, m[scope][key]) for x, m in curve(report, model)]
                ax.plot(*zip(*shown), marker="o", label=label)
            for (model, label), style in zip(BASELINES, (":", "--", "-.")):
                ax.axhline(report["baselines"][model]["valid"][scope][key], color="grey", linestyle=style,
                           label=label)
            ax.set_title(f"validation {name} ({scope})")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("epoch (A alone, then the federated models from its chosen one)")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fresh_run_dir(root: Path) -> None:
    """Empty `root` for a new run, refusing to delete a directory that does not hold a previous run."""
    if root.exists():
        if not (root / "party_a" / "party_a.toml").exists() and any(root.iterdir()):
            raise SystemExit(f"{root} exists and does not hold a previous run; choose another --dir")
        shutil.rmtree(root)


def scenario_main(doc: str, prepare: Callable[..., LocalRun], default_dir: str, users_help: str,
                  default_users: int | None, default_epochs: int,
                  options: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The command line every scenario shares: build a run, run it, print the table. `options` adds a scenario's
    own options; their values are passed to `prepare` by name."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(default_dir), help="run directory (replaced)")
    parser.add_argument("--users", type=int, default=default_users, help=users_help)
    parser.add_argument("--epochs", type=int, default=default_epochs)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of the synthetic data (story 1: and of the coordinator's W0, so that a run "
                             "repeats); with several, one run directory per seed under --dir and a table of mean ± "
                             "standard deviation at the end")
    if options:
        options(parser)
    args = parser.parse_args()
    own = {k: v for k, v in vars(args).items() if k not in ("dir", "users", "epochs", "seeds")}
    per_seed = []
    for seed in args.seeds:
        root = args.dir if len(args.seeds) == 1 else args.dir / f"seed{seed}"
        run = prepare(root, args.users, args.epochs, seed, **own)
        print(f"seed {seed}: tables, certificates and configs in {root}; starting the coordinator and both "
              f"parties", flush=True)
        report = run_experiment(run)
        print()
        print(summary_table(report))
        print()
        print(segment_table(report))
        t = report["timing"]
        print(f"\nsecure training {t['secure_training_seconds']:.0f}s ({t['user_steps_per_second']:.0f} "
              f"user-steps/s), whole run {report['wall_seconds']['total']:.0f}s; report {root / 'report.json'}, "
              f"curves {root / 'curves.png'}\n", flush=True)
        per_seed.append({**{key: final(report, key) for key, _ in BASELINES + MODELS},
                         "by_segment": report["segments"]["combined"],
                         **{key: final(report, key) for key, _ in ANCHORS}})
    if len(per_seed) > 1:
        print(f"test metrics over seeds {', '.join(map(str, args.seeds))}, mean ± standard deviation:")
        print(spread_table(per_seed, report["eval"]["k"]))


def spread(values: list[float | None], digits: int = 4) -> str:
    """Mean ± standard deviation over the seeds that have a value (a segment without users has none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):.{digits}f} ± {sd:.{digits}f}"


def spread_table(per_seed: list[dict[str, dict]], k: int) -> str:
    """Each model's test metrics as mean ± standard deviation over seeds, overall and for cold users."""
    names = [f"HR@{k}", f"NDCG@{k}", "AUC"]
    head = f"{'model':<12} | " + " ".join(f"{n:>17}" for n in names) + " | " + \
        " ".join(f"{'cold ' + n:>17}" for n in names)
    lines = [head, "-" * len(head)]
    for model in per_seed[0]:
        cells = [spread([r[model][scope][m] for r in per_seed]) for scope in ("overall", "cold")
                 for m in ("hr", "ndcg", "auc")]
        lines.append(f"{model:<12} | " + " ".join(f"{c:>17}" for c in cells[:3]) + " | " +
                     " ".join(f"{c:>17}" for c in cells[3:]))
    return "\n".join(lines)


def build_run(root: Path, tables: dict[str, Path], a: dict, b: dict, run_id: str, epochs: int,
              key_bits: int = DEFAULT_BITS, progress: bool = True, tower: dict | None = None, record: bool = False,
              peer_timeout: float | None = None, a_extra: dict | None = None, b_extra: dict | None = None,
              workers: int | None = None, compute: dict | None = None, w0_seed: int | None = None,
              **train: object) -> LocalRun:
    """Configs and certificates for a scenario in `root`: A's and B's table sections plus the shared settings.

    `tables` are the scenario's files, each in its owner's directory (`root/<role>/...`); `a` and `b` name
    them by key as "{key}" in "table". `a_extra`, `b_extra`: more sections of A's and B's configs (e.g.
    {"privacy": {...}, "audit": {"record": True}}). `workers`, `compute`: every role's
    `workers` and [compute] section. `w0_seed`: the coordinator's, for a run that repeats exactly."""

    def resolve(section: dict, role: str) -> dict:
        return {k: resolve(v, role) if isinstance(v, dict) else
                (os.path.relpath(tables[v[1:-1]], root / role) if k == "table" else v) for k, v in section.items()}

    sections = {
        "coordinator": {"key": {"bits": key_bits}, **({} if w0_seed is None else {"w0_seed": w0_seed})},
        "party_a": {**resolve(a, "party_a"), "train": {"epochs": epochs, "progress": progress, **train},
                    "psi": {"progress": progress}, **(a_extra or {})},
        "party_b": {**resolve(b, "party_b"), **({"model": tower} if tower else {}), "psi": {"progress": progress},
                    **(b_extra or {})},
    }
    set_compute(sections, workers, compute)
    return write_local_run(root, sections, run_id=run_id, record=record, peer_timeout=peer_timeout)

"""A scenario's results over seeds as Markdown: every model overall, on cold users and per segment, with spreads.

    python -m scenarios.ecommerce_bank --seeds 0 1 2 --dir runs/s1
    python -m scenarios.results runs/s1 --title "Story 1" >> results.md

Reads `<dir>/seed*/report.json` (the runs of one scenario, one per seed) and prints
three tables of test metrics, mean ± standard deviation over the seeds: each model
overall and on cold users; each scorer per activity segment, with the scorer each
segment chose on validation; and the checks a user would make (federated against A
alone on every seed, A alone against A's best single-party baseline, and the share of
the joint anchors' cold-user gain the federated model gets). "Best" is the model with
the best mean over the seeds, the one a user would pick and run, not the best of each
seed on its test lists: that pick is made on test and stands above every model a
user could run by the test noise it picked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from scenarios import experiment
from scenarios.experiment import ANCHORS, BASELINES, MODELS, final

SERVED = ("by_segment", "served by segment")
SCORERS = BASELINES + MODELS[:2]
FEWEST_COLD = 50  # cold users a seed below which one user moves cold HR@k by more than the 0.03 judged
TOLERANCE = 0.005  # the HR@k a federated model may lose to A alone, or A alone to a baseline, on the mean


def load(directory: Path) -> list[dict]:
    """The reports of every seed's run under `directory`, by seed."""
    paths = sorted(directory.glob("seed*/report.json"), key=lambda p: int(p.parent.name[4:]))
    if not paths:
        raise SystemExit(f"error: no seed*/report.json under {directory} (run a scenario with --seeds first)")
    return [json.loads(p.read_text()) for p in paths]


def model_metrics(report: dict, model: str) -> dict:
    """Test metrics of any model in the table; `by_segment` is each segment served by its choice."""
    return report["segments"]["combined"] if model == SERVED[0] else final(report, model)


def spread(values: list[float | None]) -> str:
    return experiment.spread(values, digits=3)


def models_table(reports: list[dict], k: int) -> str:
    models = BASELINES + MODELS + (SERVED,) + (ANCHORS if "anchors" in reports[0] else ())
    lines = [f"| model | HR@{k} | NDCG@{k} | cold HR@{k} | cold NDCG@{k} |", "|---|---|---|---|---|"]
    for key, name in models:
        cells = [spread([model_metrics(r, key)[scope][m] for r in reports]) for scope in ("overall", "cold")
                 for m in ("hr", "ndcg")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def segment_table(reports: list[dict], k: int) -> str:
    names = list(reports[0]["segments"]["choice"])
    users = [int(np.mean([r["segments"]["test"]["a_alone"][n]["users"] for r in reports])) for n in names]
    lines = [f"| HR@{k} by training events at A | " + " | ".join(f"{n} ({u} users)" for n, u in zip(names, users))
             + " |", "|---" * (len(names) + 1) + "|"]
    for key, name in SCORERS:
        cells = [spread([r["segments"]["test"][key][n]["hr"] for r in reports]) for n in names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    served = [spread([r["segments"]["test"][r["segments"]["choice"][n]][n]["hr"] for r in reports]) for n in names]
    lines.append("| served by segment | " + " | ".join(served) + " |")
    chosen = [", ".join(sorted({r["segments"]["choice"][n] for r in reports})) for n in names]
    lines.append("| chosen on validation | " + " | ".join(chosen) + " |")
    return "\n".join(lines)


def hr(report: dict, model: str, scope: str) -> float:
    return model_metrics(report, model)[scope]["hr"]


def strongest(reports: list[dict], models: tuple[tuple[str, str], ...], scope: str) -> tuple[str, list[float]]:
    """Of `models` (key, label), the label of the one with the best mean HR@k over the seeds, and its HR@k on
    each seed."""
    key, label = max(models, key=lambda model: np.mean([hr(r, model[0], scope) for r in reports]))
    return label, [hr(r, key, scope) for r in reports]


def checks(reports: list[dict], k: int) -> list[str]:
    """The checks, each a line ending in `yes` or `no`."""
    out = []
    for scope in ("overall", "cold"):
        gap = [hr(r, "federated", scope) - hr(r, "a_alone", scope) for r in reports]
        sd = np.std([hr(r, "a_alone", scope) for r in reports], ddof=1) if len(reports) > 1 else 0.0
        ok = np.mean(gap) >= -TOLERANCE and min(gap) >= -sd
        out.append(f"- federated − A alone, HR@{k} {scope}: " + ", ".join(f"{g:+.3f}" for g in gap) +
                   f" (mean {np.mean(gap):+.3f}; at least −{TOLERANCE} on the mean and −{sd:.3f}, one sd of A "
                   f"alone, on every seed): {'yes' if ok else 'no'}")
        label, best = strongest(reports, BASELINES, scope)
        lead = [hr(r, "a_alone", scope) - b for r, b in zip(reports, best)]
        out.append(f"- A alone − A's best baseline ({label}), HR@{k} {scope}: " +
                   ", ".join(f"{g:+.3f}" for g in lead) +
                   f" (mean {np.mean(lead):+.3f}, at least −{TOLERANCE}): "
                   f"{'yes' if np.mean(lead) >= -TOLERANCE else 'no'}")
    cold_users = int(np.mean([model_metrics(r, "federated")["cold"]["users"] for r in reports]))
    if "anchors" in reports[0] and cold_users < FEWEST_COLD:
        out.append(f"- the joint anchors' cold gain: not judged, {cold_users} cold users a seed (fewer than "
                   f"{FEWEST_COLD})")
    elif "anchors" in reports[0]:
        single = strongest(reports, BASELINES + MODELS[:1], "cold")[1]
        anchor = np.mean(strongest(reports, ANCHORS, "cold")[1]) - np.mean(single)
        gain = np.mean([hr(r, "federated", "cold") for r in reports]) - np.mean(single)
        share = f"{gain / anchor:.0%} of it" if anchor > 0 else "no gain to share"
        verdict = "yes" if anchor < 0.03 or gain >= 0.7 * anchor else "no"
        out.append(f"- the joint anchors' cold HR@{k} gain over the best single-party model: {anchor:+.3f}; the "
                   f"federated model's: {gain:+.3f}, {share} (at least 70 % where the anchors gain 0.03 or more): "
                   f"{verdict}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="the --dir of a scenario run with several --seeds")
    parser.add_argument("--title", default=None, help="a heading for the tables (default: the directory's name)")
    args = parser.parse_args()
    reports = load(args.directory)
    k = reports[0]["eval"]["k"]
    seeds = len(reports)
    print(f"### {args.title or args.directory.name}\n")
    print(f"Test lists, {seeds} seeds, mean ± standard deviation; {reports[0]['shared_users']} shared users, "
          f"{reports[0]['items']} items, {reports[0]['key_bits']}-bit keys.\n")
    print(models_table(reports, k) + "\n")
    print(segment_table(reports, k) + "\n")
    print("\n".join(checks(reports, k)) + "\n")


if __name__ == "__main__":
    main()

"""Attack a run's records, tabulate attack × defence next to the baselines, and draw the privacy–utility curve."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audit.attacks import LABEL_ATTACKS, auxiliary, column_attacks, label_attacks, per_epoch, u_features
from audit.parties import Parties

FRACTIONS = (0.01, 0.05)
DRAWS = 5  # auxiliary sets drawn per fraction; figures are their mean, as one small set is a noisy estimate
MARGIN = 0.05  # a defence "holds" when every attack is within this of its baseline
UNDEFENDED = "none"  # the setting without a defence


@dataclass
class Outcome:
    """One setting's run: its ε, the federated model's test metrics, and every attack's figures."""

    setting: str
    epsilon_a: float | None  # None: no defence, ε unbounded
    epsilon_b: float | None
    quality: dict  # test metrics of the chosen epoch: {"overall": {...}, "cold": {...}}
    attacks: dict[float, dict] = field(default_factory=dict)  # aux fraction -> {"labels": ..., "columns": ...}


def attack_run(parties: Parties, u_eval: tuple, u_train: tuple | None, g: tuple, seed: int = 0) -> dict:
    """Every attack at every auxiliary fraction on one run's records ((rows, index) pairs), each figure the
    mean over DRAWS auxiliary sets."""
    n = parties.n_users
    g_users = per_epoch(*g, n)
    u = u_features(per_epoch(*u_eval, n), None if u_train is None else per_epoch(*u_train, n))
    out = {}
    for fraction in FRACTIONS:
        draws = [auxiliary(n, fraction, seed * DRAWS + k) for k in range(DRAWS)]
        out[fraction] = {"aux_users": int(draws[0].size),
                         "labels": _mean([label_attacks(g_users, parties.b_own, parties.labels, a) for a in draws]),
                         "columns": _mean([column_attacks(u, parties.a_own, parties.columns, a) for a in draws])}
    return out


def _mean(figures: list[dict]) -> dict:
    """The mean of nested dicts of figures with the same keys (NaN where a draw had none)."""
    first = figures[0]
    return {key: _mean([f[key] for f in figures]) if isinstance(first[key], dict)
            else float(np.nanmean([f[key] for f in figures])) for key in first}


def label_groups(names: list[str]) -> dict[str, list[str]]:
    """A's labels grouped for the table: bought in a category (averaged), the top category, activity."""
    return {"bought in a category (mean)": [n for n in names if n.startswith("bought ")],
            **{n: [n] for n in names if not n.startswith("bought ")}}


def summary(attacks: dict) -> dict[str, tuple[float, float]]:
    """(attack figure, its baseline) per table row, for one setting and one auxiliary fraction. Each figure is
    at least what guessing gets (AUC 0.5, R² 0 by predicting the auxiliary users' mean, accuracy of their
    majority class), so a baseline worse than a guess does not pass for leakage."""
    labels, columns = attacks["labels"], attacks["columns"]
    rows = {}
    for group, names in label_groups(list(labels)).items():
        base = float(np.nanmean([max(labels[n]["own columns"], 0.5) for n in names]))
        for attack in LABEL_ATTACKS:
            rows[f"B→A AUC {attack}: {group}"] = (float(np.nanmean([max(labels[n][attack], 0.5) for n in names])),
                                                  base)
    numeric = [c for c, v in columns.items() if "majority" not in v]
    categorical = [c for c, v in columns.items() if "majority" in v]
    for name in numeric:
        rows[f"A→B R²: {name}"] = (max(columns[name]["attack"], 0.0), max(columns[name]["own data"], 0.0))
    for name in categorical:
        guess = columns[name]["majority"]
        rows[f"A→B accuracy: {name}"] = (max(columns[name]["attack"], guess), max(columns[name]["own data"], guess))
    if numeric:
        rows["A→B R²: numeric columns (mean)"] = (float(np.mean([rows[f"A→B R²: {c}"][0] for c in numeric])),
                                                  float(np.mean([rows[f"A→B R²: {c}"][1] for c in numeric])))
    return rows


def worst_leak(attacks: dict, direction: str = "") -> float:
    """The largest attack − baseline over the rows of one auxiliary fraction (those of `direction`, "B→A" or
    "A→B", when given)."""
    return max(v - b for name, (v, b) in summary(attacks).items() if name.startswith(direction)
               and not math.isnan(v - b))


def _eps(value: float | None) -> str:
    return "∞" if value is None else f"{value:.2f}"


def quality_table(outcomes: list[Outcome], alone: dict | None, k: int) -> str:
    head = (f"{'setting':<10} {'ε A':>6} {'ε B':>6} | {'AUC':>7} {f'HR@{k}':>7} {f'NDCG@{k}':>8} | "
            f"{'cold AUC':>8} {f'cold HR@{k}':>10} {f'cold NDCG@{k}':>12}")
    lines = [head, "-" * len(head)]
    shown = [(o.setting, _eps(o.epsilon_a), _eps(o.epsilon_b), o.quality) for o in outcomes]
    if alone is not None:
        shown.append(("A alone", "-", "-", alone))
    for name, ea, eb, q in shown:
        o, c = q["overall"], q["cold"]
        lines.append(f"{name:<10} {ea:>6} {eb:>6} | {o['auc']:7.4f} {o['hr']:7.4f} {o['ndcg']:8.4f} | "
                     f"{c['auc']:8.4f} {c['hr']:10.4f} {c['ndcg']:12.4f}")
    return "\n".join(lines)


def attack_table(outcomes: list[Outcome], fraction: float) -> str:
    """Rows: attack and target; columns: the baseline, then per setting the figure and (leakage)."""
    rows = [summary(o.attacks[fraction]) for o in outcomes]
    width = max(len(r) for r in rows[0])
    aux = outcomes[0].attacks[fraction]["aux_users"]
    head = f"{f'aux {fraction:.0%} ({aux} users)':<{width}} | {'baseline':>8} | " + \
        " ".join(f"{o.setting:>15}" for o in outcomes)
    lines = [head, "-" * len(head)]
    for name in rows[0]:
        base = rows[0][name][1]
        cells = " ".join(f"{r[name][0]:7.3f} ({r[name][0] - r[name][1]:+.3f})" for r in rows)
        lines.append(f"{name:<{width}} | {base:8.3f} | {cells}")
    for direction in ("B→A", "A→B"):
        lines.append(f"{'largest leakage over baseline, ' + direction:<{width}} | {'':>8} | " +
                     " ".join(f"{worst_leak(o.attacks[fraction], direction):15.3f}" for o in outcomes))
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def seeds_table(runs: list[list[Outcome]], alone: list[dict], k: int) -> str:
    """One row per setting over seeds (mean ± standard deviation): each party's ε, the largest leakage over
    the baselines per direction and auxiliary fraction, and the federated model's HR@k overall and on cold
    users, next to A alone's; "holds" when every mean leakage is within MARGIN and the federated model's
    mean cold HR@k is above A alone's."""
    leaks = [(d, f) for f in FRACTIONS for d in ("B→A", "A→B")]
    head = (f"{'setting':<8} {'ε A':>6} {'ε B':>6} | " + " ".join(f"{f'{d} {f:.0%}':>13}" for d, f in leaks) +
            f" | {f'HR@{k}':>13} {f'cold HR@{k}':>13} | holds")
    cold_alone = [a["cold"]["hr"] for a in alone]
    lines = [head, "-" * len(head)]
    for column in zip(*runs):
        first = column[0]
        leak = {key: [worst_leak(o.attacks[key[1]], key[0]) for o in column] for key in leaks}
        cold = [o.quality["cold"]["hr"] for o in column]
        holds = all(np.mean(v) <= MARGIN for v in leak.values()) and np.mean(cold) > np.mean(cold_alone)
        lines.append(f"{first.setting:<8} {_eps(first.epsilon_a):>6} {_eps(first.epsilon_b):>6} | " +
                     " ".join(f"{_spread(leak[key]):>13}" for key in leaks) +
                     f" | {_spread([o.quality['overall']['hr'] for o in column]):>13} {_spread(cold):>13} | "
                     f"{'yes' if holds else 'no'}")
    lines.append(f"{'A alone':<8} {'-':>6} {'-':>6} | " + " ".join(f"{'':>13}" for _ in leaks) +
                 f" | {_spread([a['overall']['hr'] for a in alone]):>13} {_spread(cold_alone):>13} |")
    return "\n".join(lines)


def plot_curve(runs: list[list[Outcome]], alone: list[dict], k: int, path: Path) -> None:
    """Privacy–utility curve over seeds (mean, bars one standard deviation): cold and overall HR@k of the
    federated model, and the largest leakage over the baselines, against ε (the larger of the two
    parties', the first seed's; ∞ at the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    outcomes = runs[0]
    finite = [max(o.epsilon_a or 0, o.epsilon_b or 0) for o in outcomes if o.setting != UNDEFENDED]
    right = 2 * max(finite) if finite else 1.0
    x = [right if o.setting == UNDEFENDED else max(o.epsilon_a or 0, o.epsilon_b or 0) for o in outcomes]

    def curve(ax, values: list[list[float]], style: str, label: str) -> None:
        ax.errorbar(x, np.mean(values, axis=0), yerr=np.std(values, axis=0), fmt=style, capsize=3, label=label)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for scope, style in (("overall", "o-"), ("cold", "s-")):
        curve(ax1, [[o.quality[scope]["hr"] for o in run] for run in runs], style, f"federated {scope}")
        if alone:
            ax1.axhline(float(np.mean([a[scope]["hr"] for a in alone])), color="grey",
                        linestyle=":" if scope == "overall" else "--", label=f"A alone {scope}")
    ax1.set_ylabel(f"test HR@{k}")
    for fraction in FRACTIONS:
        for direction in ("B→A", "A→B"):
            curve(ax2, [[worst_leak(o.attacks[fraction], direction) for o in run] for run in runs], "o-",
                  f"{direction}, aux {fraction:.0%}")
    ax2.axhline(MARGIN, color="grey", linestyle="--", label=f"baseline + {MARGIN}")
    ax2.set_ylabel("largest attack − baseline (AUC, R², accuracy)")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("ε spent, the larger party's (right-most point: no defence)")
        ax.set_xticks(x)
        ax.xaxis.set_minor_locator(NullLocator())  # a log axis labels its minor ticks too, 3×10⁰ under ∞
        ax.set_xticklabels(["∞" if o.setting == UNDEFENDED else f"{xi:.3g}" for o, xi in zip(outcomes, x)])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""What checkpoints cost: the seconds training waited for them against the seconds it trained, in the same run.

    python -m bench.checkpoint                         # story 1, 1000 shop users, 2 epochs, the default interval
    python -m bench.checkpoint --every 10 --epochs 1   # another interval

One run of story 1 (three processes, 2048-bit key) with [checkpoint] every_steps at
`--every` (default: the config's default) in all three configs. A times each checkpoint
from its proposal to the last confirmation (B and the coordinator write theirs while A
writes its own), so the figure is what training waits for; the ratio is that time over
the secure training time of the same run (which excludes it). Also printed: the number
of checkpoints and their mean time. runs/bench/checkpoint/checkpoint.json keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

from protocol.runtime.checkpoint import CheckpointSettings
from scenarios.ecommerce_bank import prepare
from scenarios.launch import run_all, to_toml


def set_checkpoints(run: object, every: int, keep: int | None = None) -> None:
    """[checkpoint] every_steps (and keep) in every role's config of `run` (a scenarios.launch.LocalRun)."""
    for path in run.configs.values():
        config = tomllib.loads(path.read_text())
        config["checkpoint"] = {"every_steps": every, **({"keep": keep} if keep else {})}
        path.write_text(to_toml(config) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000, help="users of the shop (party A)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--every", type=int, default=CheckpointSettings.every_steps,
                        help=f"[checkpoint] every_steps (default {CheckpointSettings.every_steps})")
    parser.add_argument("--dir", type=Path, default=Path("runs/bench/checkpoint"))
    args = parser.parse_args()
    run = prepare(args.dir, args.users, args.epochs, seed=0, progress=False)
    set_checkpoints(run, args.every)
    out = run_all(run, timeout=7200)
    failed = {role: o.output[-2000:] for role, o in out.items() if o.returncode != 0}
    if failed:
        raise SystemExit(f"the run failed: {failed}")
    report = json.loads((run.workdir("party_a") / "report.json").read_text())
    t = report["timing"]
    ratio = t["checkpoint_seconds"] / t["secure_training_seconds"]
    steps = sum(1 for line in (run.workdir("coordinator") / "audit.jsonl").read_text().splitlines()
                if '"step": "refresh"' in line)
    print(f"story 1, {report['shared_users']} shared users, {steps} secure steps, [checkpoint] every_steps "
          f"{args.every} and every epoch")
    print(f"checkpoints: {t['checkpoints']} in {t['checkpoint_seconds']:.2f}s "
          f"({t['checkpoint_seconds'] / max(1, t['checkpoints']):.3f}s each)")
    print(f"secure training: {t['secure_training_seconds']:.1f}s")
    print(f"checkpoint time / training time: {ratio:.4f} ({100 * ratio:.2f} %)")
    result = {"users": args.users, "epochs": args.epochs, "every_steps": args.every, "steps": steps,
              "checkpoints": t["checkpoints"], "checkpoint_seconds": t["checkpoint_seconds"],
              "secure_training_seconds": t["secure_training_seconds"], "ratio": round(ratio, 5)}
    (args.dir / "checkpoint.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Soak: training with a fault every 30-90 s, against an undisturbed run of the same story.

    python -m bench.soak                 # about 20 minutes of training under faults
    python -m bench.soak --minutes 4     # a short one

Story 1 (three processes, 2048-bit key, default [checkpoint] settings), A↔B through
fault-injecting proxies (scenarios/proxy.py). A one-epoch run first measures an epoch,
so both runs get enough epochs to train about `--minutes` (early stopping off). The
undisturbed run trains them; then the disturbed run does, with a fault at a random
moment every `--gap` seconds (30-90 by default), dealt from a shuffled deck (so a
short soak still sees each kind) of:

- kill A, kill B, kill C: SIGKILL of that role, restarted at once with the same config
  (the others roll back and take it back);
- partition: A↔B cut for less than the peer timeout (survived without a resume);
- long partition: A↔B cut for longer: all three stop naming the peer; the network
  heals and the soak starts all three again with --resume;
- delay: every chunk between A and B held 20 ms, for 10 s.

A fault counts as survived when training goes on past a new checkpoint (or the run
completes). Steps redone are the training steps the coordinator served again (its
audit log's forward decryptions of training labels, less the distinct steps). The table
then holds the final test metrics of both runs (their W0, keys and masks differ, so
they differ as two seeds do) and, as "nothing lost, nothing applied twice": the steps
B took in the final line of checkpoints against the schedule's, and each run's
distance from the plaintext twin of its steps (tests/support/twin.py).
Over hundreds of steps the stochastic rounding of W makes any run drift from its twin,
so the undisturbed run's distance is the yardstick for the disturbed one's.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.checkpoint import set_checkpoints
from protocol.data.stored import load_state
from protocol.runtime.checkpoint import CheckpointSettings
from scenarios.ecommerce_bank import prepare
from scenarios.launch import LocalRun, run_all, start, wait_all
from scenarios.proxy import Proxy, route_through_proxy
from scenarios.experiment import decrypt_saved
from tests.support.twin import twin

ROLES = ("coordinator", "party_a", "party_b")
FAULTS = ("kill party_a", "kill party_b", "kill coordinator", "partition", "long partition", "delay")
PEER_TIMEOUT = 10.0


def new_run(root: Path, users: int, epochs: int, seed: int) -> LocalRun:
    run = prepare(root, users, epochs, seed, progress=False, patience=epochs, peer_timeout=PEER_TIMEOUT)
    set_checkpoints(run, CheckpointSettings.every_steps)
    return run


def report(run: LocalRun) -> dict:
    return json.loads((run.workdir("party_a") / "report.json").read_text())


def undisturbed(root: Path, users: int, epochs: int, seed: int) -> LocalRun:
    run = new_run(root, users, epochs, seed)
    out = run_all(run, timeout=4 * 3600)
    failed = {role: o.output[-2000:] for role, o in out.items() if o.returncode != 0}
    if failed:
        raise SystemExit(f"the undisturbed run failed: {failed}")
    return run


def checkpoints_held(run: LocalRun) -> int:
    return run.output("party_a").read_text(errors="replace").count("held by all three")


class Soak:
    """The disturbed run: its processes, proxies, and the faults injected so far."""

    def __init__(self, run: LocalRun, rng: random.Random):
        self.run, self.rng = run, rng
        self.proxies: list[Proxy] = [route_through_proxy(run, "party_a", "party_b"),
                                     route_through_proxy(run, "party_b", "party_a")]
        self.procs: dict[str, subprocess.Popen] = {role: start(run, role) for role in ROLES}
        self.injected: Counter = Counter()
        self.survived: Counter = Counter()

    def finished(self) -> bool:
        return all(p.poll() == 0 for p in self.procs.values())

    def failed(self) -> bool:
        return any(p.poll() not in (None, 0) for p in self.procs.values())

    def inject(self, fault: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {fault}", flush=True)
        self.injected[fault] += 1
        if fault.startswith("kill"):
            role = fault.split()[1]
            self.procs[role].kill()
            self.procs[role].wait()
            self.procs[role] = start(self.run, role)
        elif fault == "partition":
            for proxy in self.proxies:
                proxy.partition(self.rng.uniform(1.0, PEER_TIMEOUT / 2))
        elif fault == "long partition":
            for proxy in self.proxies:
                proxy.partition(3600.0)
            for proc in self.procs.values():
                proc.wait(timeout=6 * PEER_TIMEOUT)
            for proxy in self.proxies:
                proxy.heal()
            self.procs = {role: start(self.run, role, "--resume") for role in ROLES}
        else:
            for proxy in self.proxies:
                proxy.delay(0.02)
            time.sleep(10.0)
            for proxy in self.proxies:
                proxy.delay(0.0)

    def progressed(self, fault: str, since: int, timeout: float) -> bool:
        """Whether training went past a new checkpoint (or completed) after `fault`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if checkpoints_held(self.run) > since or self.finished():
                self.survived[fault] += 1
                return True
            if self.failed():
                return False
            time.sleep(0.2)
        return False

    def close(self) -> dict:
        out = wait_all(self.run, self.procs, timeout=4 * 3600)
        for proxy in self.proxies:
            proxy.close()
        return out


def b_steps(run: LocalRun) -> int:
    """The training steps B took in the final line of checkpoints (its count is restored at each resume)."""
    last = run.output("party_b").read_text(errors="replace").rsplit("after ", 1)[1]
    return int(last.split(" training steps")[0])


def steps_redone(run: LocalRun) -> tuple[int, int]:
    """(training steps served, distinct training steps) from the coordinator's audit log."""
    entries = [json.loads(line) for line in (run.workdir("coordinator") / "audit.jsonl").read_text().splitlines()]
    forwards = [e["label"] for e in entries if e["step"] == "forward" and "refused" not in e]
    return len(forwards), len({label.split("/g")[0] for label in forwards})


def twin_distance(run: LocalRun, steps: int) -> tuple[int, float]:
    """The largest difference of the final W from the plaintext twin's (units of 2^-w_bits) and of any parameter."""
    _, _, layer, trained = twin(run, steps=steps)
    w_rows = decrypt_saved(run, "party_b", "w_rows")
    if not (decrypt_saved(run, "party_a", "w_cols").T == w_rows).all():
        raise SystemExit("A's [W] by columns and B's [W] by rows hold different W")
    units = int(np.abs((w_rows - layer.w).astype(np.int64)).max())
    diff = 0.0
    for saved, ours in ((run.workdir("party_a") / "model" / "active.pt", trained.model),
                        (run.workdir("party_b") / "model" / "tower_b.pt", trained.tower)):
        state = load_state(saved.parent, saved.name)
        diff = max([diff] + [float((state[p] - v).abs().max()) for p, v in ours.state_dict().items()])
    return units, diff


def table(soak: Soak, served: int, steps: int, b_took: int, calm: dict, disturbed: dict,
          distance: dict[str, tuple[int, float]], seconds: float) -> str:
    lines = [f"{'fault':<16} {'injected':>8} {'survived':>8}"]
    lines += [f"{f:<16} {soak.injected[f]:>8} {soak.survived[f]:>8}" for f in FAULTS]
    lines.append(f"{'all':<16} {sum(soak.injected.values()):>8} {sum(soak.survived.values()):>8}")
    lines.append(f"\ndisturbed run: {seconds / 60:.1f} min, {steps} training steps, {served - steps} redone after "
                 f"rollbacks; B took {b_took} steps in the final line of checkpoints")
    k = calm["eval"]["k"]
    lines.append(f"\n{'final test metrics':<20} {'AUC':>8} {f'HR@{k}':>8} {f'NDCG@{k}':>8}")
    for name, r in (("undisturbed", calm), ("disturbed", disturbed)):
        m = r["chosen"]["federated"]["test"]["overall"]
        lines.append(f"{name:<20} {m['auc']:>8.4f} {m['hr']:>8.4f} {m['ndcg']:>8.4f}")
    lines.append(f"\nagainst the plaintext twin of its {steps} steps ([W] by columns at A = [W] by rows at B, "
                 f"transposed, in both):")
    lines += [f"{name:<20} W within {units} units of 2^-w_bits, parameters within {diff:.2e}"
              for name, (units, diff) in distance.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training under faults, about (default 20)")
    parser.add_argument("--users", type=int, default=300, help="users of the shop (party A)")
    parser.add_argument("--gap", type=float, nargs=2, default=(30.0, 90.0), help="seconds between faults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=Path("runs/bench/soak"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    one = report(undisturbed(args.dir / "calibration", args.users, 1, args.seed))["epochs"][0]["seconds"]
    epochs = max(2, math.ceil(args.minutes * 60 / one))
    print(f"one epoch takes {one:.0f}s: {epochs} epochs in each run", flush=True)
    calm = undisturbed(args.dir / "undisturbed", args.users, epochs, args.seed)
    soak = Soak(new_run(args.dir / "disturbed", args.users, epochs, args.seed), rng)
    started, deck = time.monotonic(), []
    while not checkpoints_held(soak.run):  # faults from the first checkpoint on: before it there is nothing to resume
        if soak.failed():
            raise SystemExit(f"the disturbed run stopped: {soak.close()}")
        time.sleep(0.2)
    while not soak.finished():
        wait_until = time.monotonic() + rng.uniform(*args.gap)
        while time.monotonic() < wait_until and not soak.finished() and not soak.failed():
            time.sleep(0.2)
        if soak.finished():
            break
        if soak.failed():
            raise SystemExit(f"the disturbed run stopped: {soak.close()}")
        if not deck:
            deck = rng.sample(FAULTS, len(FAULTS))
        fault, since = deck.pop(), checkpoints_held(soak.run)
        soak.inject(fault)
        if not soak.progressed(fault, since, timeout=600):
            raise SystemExit(f"no progress after a {fault}: {soak.close()}")
    seconds = time.monotonic() - started
    out = soak.close()
    if any(o.returncode != 0 for o in out.values()):
        raise SystemExit(f"the disturbed run failed: { {r: o.output[-2000:] for r, o in out.items()} }")
    served, steps = steps_redone(soak.run)
    distance = {"undisturbed": twin_distance(calm, steps), "disturbed": twin_distance(soak.run, steps)}
    text = table(soak, served, steps, b_steps(soak.run), report(calm), report(soak.run), distance, seconds)
    print("\n" + text)
    (args.dir / "soak.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Ansible speed: wall time of site.yml (first converge), site.yml again (no-op) and
deploy.yml, on fresh lab machines for each configuration, in interleaved rounds.

Configurations:
- project: the repository's ansible.cfg as it is (Ansible's linear strategy, pipelining,
  ControlPersist, smart gathering with a jsonfile fact cache, forks 20);
- mitogen: the same cfg with Mitogen's strategy (ANSIBLE_STRATEGY=mitogen_or_linear,
  tools/strategy);
- defaults: a cfg that only sets collections_path and roles_path (so the collection
  resolves): no pipelining, no ControlPersist, no fact cache, default forks (5).
The project and mitogen runs keep their fact cache in bench/out/ansible_speed/facts
(emptied first) so that no earlier run's facts are reused.

The lab shape: two machines, bench-asedge (lb, app) and bench-asdata (db, cache).

Usage: .venv/bin/python bench/ansible_speed.py [--rounds 3] [--configs project mitogen defaults]
Figures: bench/out/ansible_speed.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

import benchlib
from benchlib import OUT, REPO, Lab, ratio, recap, table

MACHINES = {"bench-asedge": "lb,app", "bench-asdata": "db,cache"}
CONFIGS = ("project", "mitogen", "defaults")
STEPS = ("first", "noop", "deploy")


def defaults_cfg() -> str:
    path = OUT / "ansible_speed" / "defaults.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Ansible's defaults, except where the collection and its roles are found.\n"
        "[defaults]\n"
        f"collections_path = {REPO}/collections:~/.ansible/collections\n"
        f"roles_path = {REPO}/roles\n"
    )
    return str(path)


def environment(config: str) -> dict[str, str]:
    if config == "defaults":
        return {"ANSIBLE_CONFIG": defaults_cfg()}
    facts = OUT / "ansible_speed" / "facts"
    shutil.rmtree(facts, ignore_errors=True)
    env = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(facts),
    }
    if config == "mitogen":
        env["ANSIBLE_STRATEGY"] = "mitogen_or_linear"
    return env


def cpu_busy_s() -> float:
    """CPU seconds this host has spent busy since boot (every core; lab machines included)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run(config: str, rnd: int) -> dict:
    env = environment(config)
    figures: dict = {}
    with Lab("ansible_speed", MACHINES) as lab:
        for step, playbook, args in (
            ("first", "playbooks/site.yml", ()),
            ("noop", "playbooks/site.yml", ()),
            ("deploy", "playbooks/deploy.yml", ("-e", f"app_build=bench-{int(time.time())}")),
        ):
            name = f"{config}-{rnd}-{step}"
            cpu = cpu_busy_s()
            wall = lab.playbook(playbook, *args, env=env, logname=name)
            figures[step] = {
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu_busy_s() - cpu, 1),
                **recap(lab.dir / f"{name}.log"),
            }
    if figures["noop"].get("changed", 0):
        raise SystemExit(f"{config}: the second site.yml changed something: not a no-op")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    args = parser.parse_args()
    rounds: list[dict[str, dict]] = []
    for rnd in range(args.rounds):
        rounds.append({cfg: run(cfg, rnd) for cfg in args.configs})

    def median(cfg: str, step: str, key: str = "wall_s") -> float:
        return round(statistics.median(r[cfg][step][key] for r in rounds), 1)

    print(f"Ansible speed: wall seconds on 2 fresh lab machines, median of {args.rounds} rounds")
    print(
        table(
            ["run", *args.configs, "changed"],
            [
                [
                    step,
                    *(median(c, step) for c in args.configs),
                    rounds[0][args.configs[0]][step].get("changed", 0),
                ]
                for step in STEPS
            ],
        )
    )
    print("CPU seconds the host spent busy during each run (controller and lab machines)")
    print(
        table(
            ["run", *args.configs],
            [[step, *(median(c, step, "cpu_s") for c in args.configs)] for step in STEPS],
        )
    )
    # Every ratio is taken within a round (same minutes of the machine), then the median.
    per_round: dict[str, list[float]] = {}
    for cfg in args.configs:
        per_round[f"noop/first {cfg}"] = [
            ratio(r[cfg]["noop"]["wall_s"], r[cfg]["first"]["wall_s"]) for r in rounds
        ]
    # Above 1: the second configuration is faster.
    for slow, fast in (("project", "mitogen"), ("defaults", "project")):
        if slow in args.configs and fast in args.configs:
            for step in STEPS:
                per_round[f"{slow}/{fast} {step}"] = [
                    ratio(r[slow][step]["wall_s"], r[fast][step]["wall_s"]) for r in rounds
                ]
    ratios = {k: round(statistics.median(v), 2) for k, v in per_round.items()}
    targets = {"noop/first project": "<= 0.35", "defaults/project noop": ">= 1.5"}
    print(
        table(
            ["ratio", "median", "per round", "target"],
            [
                [k, f"{ratios[k]:.2f}", " ".join(f"{x:.2f}" for x in v), targets.get(k, "")]
                for k, v in per_round.items()
            ],
        )
    )
    benchlib.write_json(
        "ansible_speed",
        {
            "command": "python bench/ansible_speed.py "
            f"--rounds {args.rounds} --configs {' '.join(args.configs)}",
            "rounds": rounds,
            "per_round": per_round,
            "ratios": ratios,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()

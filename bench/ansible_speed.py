"""Ansible speed: wall time of site.yml (first converge), site.yml again (no-op) and
deploy.yml, with the project's ansible.cfg versus Ansible's defaults, on fresh lab
machines for each configuration.

"Defaults" is a cfg that only sets collections_path and roles_path (so the collection
resolves): no pipelining, no ControlPersist, no fact cache, default forks (5), implicit
gathering. The project's cfg runs with its fact cache in bench/out/ansible_speed/facts
(emptied first) so that no earlier run's facts are reused.

The lab shape: two machines, bench-asedge (lb, app) and bench-asdata (db, cache).

Usage: .venv/bin/python bench/ansible_speed.py
Figures: bench/out/ansible_speed.json
"""

from __future__ import annotations

import argparse
import shutil
import time

import benchlib
from benchlib import OUT, REPO, Lab, ratio, recap, table

MACHINES = {"bench-asedge": "lb,app", "bench-asdata": "db,cache"}


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


def run(config: str) -> dict:
    facts = OUT / "ansible_speed" / "facts"
    shutil.rmtree(facts, ignore_errors=True)
    if config == "project":
        env = {
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(facts),
        }
    else:
        env = {"ANSIBLE_CONFIG": defaults_cfg()}
    figures: dict = {}
    with Lab("ansible_speed", MACHINES) as lab:
        for step, playbook, args in (
            ("first", "playbooks/site.yml", ()),
            ("noop", "playbooks/site.yml", ()),
            ("deploy", "playbooks/deploy.yml", ("-e", f"app_build=bench-{int(time.time())}")),
        ):
            name = f"{config}-{step}"
            wall = lab.playbook(playbook, *args, env=env, logname=name)
            figures[step] = {"wall_s": round(wall, 1), **recap(lab.dir / f"{name}.log")}
    return figures


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0]).parse_args()
    results = {cfg: run(cfg) for cfg in ("project", "defaults")}
    rows = []
    for step in ("first", "noop", "deploy"):
        p, d = results["project"][step], results["defaults"][step]
        rows.append(
            [
                step,
                p["wall_s"],
                d["wall_s"],
                f"{ratio(d['wall_s'], p['wall_s']):.2f}",
                p.get("changed", 0),
                d.get("changed", 0),
            ]
        )
    ratios = {
        "defaults/project first": ratio(
            results["defaults"]["first"]["wall_s"], results["project"]["first"]["wall_s"]
        ),
        "defaults/project noop": ratio(
            results["defaults"]["noop"]["wall_s"], results["project"]["noop"]["wall_s"]
        ),
        "defaults/project deploy": ratio(
            results["defaults"]["deploy"]["wall_s"], results["project"]["deploy"]["wall_s"]
        ),
        "noop/first project": ratio(
            results["project"]["noop"]["wall_s"], results["project"]["first"]["wall_s"]
        ),
        "noop/first defaults": ratio(
            results["defaults"]["noop"]["wall_s"], results["defaults"]["first"]["wall_s"]
        ),
    }
    targets = {"defaults/project noop": ">= 1.5", "noop/first project": "<= 0.35"}
    print("Ansible speed: wall seconds on 2 fresh lab machines per configuration")
    print(
        table(
            [
                "run",
                "project cfg s",
                "defaults s",
                "defaults/project",
                "changed (p)",
                "changed (d)",
            ],
            rows,
        )
    )
    print(
        table(
            ["ratio", "value", "target"],
            [[k, f"{v:.2f}", targets.get(k, "")] for k, v in ratios.items()],
        )
    )
    benchlib.write_json(
        "ansible_speed",
        {
            "command": "python bench/ansible_speed.py",
            "runs": results,
            "ratios": ratios,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()

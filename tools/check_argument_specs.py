"""Every role's defaults/main.yml and meta/argument_specs.yml (entry point `main`)
must name the same variables: a default nobody validates, or a validated variable with
no default, is a bug waiting for a user. An internal role (no `main` entry point, only
called with tasks_from, e.g. `shared`) is checked against all its entry points together."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def check(role: Path) -> list[str]:
    defaults_file = role / "defaults/main.yml"
    spec_file = role / "meta/argument_specs.yml"
    if not spec_file.exists():
        return [f"{role.name}: meta/argument_specs.yml is missing"]
    defaults = set(
        (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {}
    )
    specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
    if "main" in specs:
        options = specs["main"].get("options") or {}
    else:
        options = {k: v for spec in specs.values() for k, v in (spec.get("options") or {}).items()}
    required = {k for k, v in options.items() if v.get("required")}
    problems = [
        f"{role.name}: {v} is in defaults but not in argument_specs"
        for v in sorted(defaults - set(options))
    ]
    problems += [
        f"{role.name}: {v} is in argument_specs but has no default"
        for v in sorted(set(options) - defaults - required)
    ]
    return problems


def main() -> int:
    roles = sorted(p for p in Path("roles").iterdir() if p.is_dir())
    problems = [p for role in roles for p in check(role)]
    for p in problems:
        print(p)
    print(f"argument specs: {len(roles)} roles checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Three rules every role keeps, checked in `make lint` (docs/conventions.md):

- argument specs: defaults/main.yml and meta/argument_specs.yml (entry point `main`) name
  the same variables: a default nobody validates, or a validated variable with no default,
  is a bug waiting for a user. An internal role (no `main` entry point, only called with
  tasks_from, e.g. `shared`) is checked against all its entry points together, and so are
  the `_<role>_*` inputs of a role's internal entry points (etcd's `client`).
- internal names: every name a role makes for itself starts with `__<role>_`: the keys of
  vars/main.yml, registered results, set_fact keys and task-level `vars:` that are not an
  input of some role's argument specs. A user's variable can then never be shadowed by, or
  mistaken for, a role's internal one.
- one default: no role or playbook falls back on a literal copy of another role's default
  (`app_port | default(8000)` outside roles/app); it reads the owner's default instead
  (lookup fastapi_ops.stack.role_default, or include_vars of the defaults file)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

# Facts an entry point hands back to its callers, documented in that role's README.
PUBLIC_FACTS = {
    "shared_in_container",
    "shared_units_not_installed",
    "shared_tls_switch_pending",
    "pgbackrest_postgresql_settings",
    "etcd_client_key",
    "etcd_client_cert",
    "etcd_client_ca_cert",
    "etcd_client_endpoints",
    "patroni_leader",
    "patroni_switchover_seconds",
    "app_token",
    "app_releases",
    "postgresql_ca_cert_pem",
    "redis_ca_cert_pem",
}


def load(path: Path):
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def entry_points(role: Path) -> dict:
    return load(role / "meta/argument_specs.yml").get("argument_specs") or {}


def check_argument_specs(role: Path) -> list[str]:
    specs = entry_points(role)
    if not specs:
        return [f"{role.name}: meta/argument_specs.yml is missing"]
    defaults = set(load(role / "defaults/main.yml"))
    if "main" in specs:
        # Inputs of the role's internal entry points (`_<role>_*`, e.g. etcd's `client`) are
        # checked against those entry points, the others against `main`.
        options = dict(specs["main"].get("options") or {})
        options |= {
            k: v
            for name, spec in specs.items()
            if name != "main"
            for k, v in (spec.get("options") or {}).items()
            if k.startswith(f"_{role.name}_")
        }
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


def names_made(node, found: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            names_made(item, found)
    elif isinstance(node, dict):
        if isinstance(node.get("register"), str):
            found.add(node["register"])
        for key in ("ansible.builtin.set_fact", "set_fact", "vars"):
            if isinstance(node.get(key), dict):
                found |= {k for k in node[key] if k != "cacheable"}
        for value in node.values():
            names_made(value, found)


def check_internal_names(role: Path, inputs: set[str]) -> list[str]:
    found = set(load(role / "vars/main.yml"))
    for tasks in [*role.glob("tasks/*.yml"), *role.glob("handlers/*.yml")]:
        names_made(yaml.safe_load(tasks.read_text()), found)
    internal = re.compile(rf"__{role.name}_[a-z0-9_]+$")
    return [
        f"{role.name}: {name} should be named __{role.name}_…"
        for name in sorted(found - inputs - PUBLIC_FACTS)
        if not internal.match(name)
    ]


LITERAL_FALLBACK = re.compile(
    r"\b([a-z][a-z0-9_]*)\s*\|\s*default\(\s*(-?[0-9.]+|'[^']*'|\"[^\"]*\"|true|false|\[\]|\{\})\s*[,)]",
    re.IGNORECASE,
)


def check_one_default(roles: list[Path]) -> list[str]:
    owner = {name: role.name for role in roles for name in load(role / "defaults/main.yml")}
    problems = []
    for path in sorted(
        [
            *Path("roles").rglob("*.yml"),
            *Path("roles").rglob("*.j2"),
            *Path("playbooks").rglob("*.yml"),
        ]
    ):
        for match in LITERAL_FALLBACK.finditer(path.read_text()):
            name = match.group(1)
            if name in owner and path.parts[:2] != ("roles", owner[name]):
                problems.append(
                    f"{path}: {match.group(0)} copies the default of {name} (role "
                    f"{owner[name]}): use lookup('fastapi_ops.stack.role_default', ...)"
                )
    return problems


def main() -> int:
    roles = sorted(p for p in Path("roles").iterdir() if p.is_dir())
    inputs = {
        name
        for role in roles
        for spec in entry_points(role).values()
        for name in spec.get("options") or {}
    }
    problems = [
        p for role in roles for p in check_argument_specs(role) + check_internal_names(role, inputs)
    ] + check_one_default(roles)
    for p in problems:
        print(p)
    print(f"roles: {len(roles)} checked (specs, names, one default), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

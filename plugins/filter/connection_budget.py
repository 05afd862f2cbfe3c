"""The PostgreSQL connection budget of the app tier: does every worker's pool fit?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.fastapi_ops.stack.plugins.filter.gunicorn_workers import (
    gunicorn_workers,
)

DOCUMENTATION = r"""
name: connection_budget
short_description: Check that the app hosts' connection pools fit in PostgreSQL's max_connections
version_added: 0.2.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - "Sums, over the app hosts, C(workers * (pool_size + max_overflow)): each Gunicorn
    worker holds its own SQLAlchemy pool, which may grow to C(pool_size + max_overflow)
    connections. The budget fits when that total plus C(superuser_reserved) plus
    C(monitoring) is at most C(max_connections)."
  - A host whose C(workers) is V(auto) gets the count the app role computes, the
    C(fastapi_ops.stack.gunicorn_workers) filter on its C(vcpus) and C(memory_mb) with its
    C(per_worker_mb), C(reserve_mb) and C(max_workers).
  - It is the only implementation of this rule in the collection; the preflight playbook
    (C(playbooks/preflight.yml)) calls it once per db host, before any host changes, with
    each variable read from the inventory or else from the default of the role that owns it.
  - Invalid values do not raise; they are listed in RV(_value.errors) (and C(fits) is
    false), named after the collection's variables (C(app_workers), C(app_db_pool_size),
    C(postgresql_max_connections)...) so that the message says what to fix. Input of the
    wrong shape (not a list of mappings, no C(host)) raises an error.
options:
  _input:
    description:
      - One mapping per app host, with the keys C(host) (name), C(workers) (V(auto) or an
        integer >= 1, the host's C(app_workers)), C(pool_size) (integer >= 1,
        C(app_db_pool_size)) and C(max_overflow) (integer >= 0, C(app_db_max_overflow)).
      - With C(workers=auto) also C(vcpus) (C(ansible_processor_vcpus)), C(memory_mb)
        (C(ansible_memtotal_mb)), C(per_worker_mb) (C(app_workers_per_worker_mb)),
        C(reserve_mb) (C(app_workers_reserve_mb)) and C(max_workers) (C(app_workers_max)).
      - Numbers may be strings of digits (extra vars arrive as strings).
    type: list
    elements: dict
    required: true
  max_connections:
    description: PostgreSQL's C(max_connections) (C(postgresql_max_connections)).
    type: int
    required: true
  superuser_reserved:
    description: C(superuser_reserved_connections) (C(postgresql_superuser_reserved_connections)).
    type: int
    required: true
  monitoring:
    description: Connections kept for monitoring (C(postgresql_monitoring_connections)).
    type: int
    required: true
"""

EXAMPLES = r"""
- name: Check the budget of the app hosts against this db host
  ansible.builtin.assert:
    that: budget.fits
    fail_msg: "{{ budget.message }}"
  vars:
    budget: >-
      {{ [{'host': 'app1', 'workers': 4, 'pool_size': 5, 'max_overflow': 5},
          {'host': 'app2', 'workers': 'auto', 'vcpus': 2, 'memory_mb': 4096,
           'per_worker_mb': 256, 'reserve_mb': 512, 'max_workers': 16,
           'pool_size': 5, 'max_overflow': 5}]
         | fastapi_ops.stack.connection_budget(max_connections=100, superuser_reserved=3,
                                               monitoring=3) }}

# app1: 4 x (5 + 5) = 40, app2: 2 (auto) x (5 + 5) = 20; 40 + 20 + 3 + 3 = 66 <= 100: fits.
"""

RETURN = r"""
_value:
  description: The budget, the numbers it is made of and a message that names them.
  type: dict
  contains:
    rows:
      description:
        - One mapping per valid app host, in input order, with C(host), C(workers),
          C(workers_source) (V(app_workers) or V(auto from N vCPU/M MB)), C(pool_size),
          C(max_overflow), C(connections) and C(text) (the line of the message).
      type: list
      elements: dict
    errors:
      description: What is wrong with the input, one message per value; empty when valid.
      type: list
      elements: str
    app_total:
      description: Connections the valid app hosts may open.
      type: int
    needed:
      description: C(app_total + superuser_reserved + monitoring) (0 for values in error).
      type: int
    max_connections:
      description: The C(max_connections) checked against, or V(None) when invalid.
      type: int
    fits:
      description: No error and C(needed <= max_connections).
      type: bool
    message:
      description:
        - The errors, or the budget with every number and, when it does not fit, what to
          change.
      type: str
"""

# Name of each input key in the collection's variables, for the messages.
VARIABLES = {
    "workers": "app_workers",
    "pool_size": "app_db_pool_size",
    "max_overflow": "app_db_max_overflow",
    "vcpus": "the vCPU count (ansible_processor_vcpus)",
    "memory_mb": "the memory (ansible_memtotal_mb)",
    "per_worker_mb": "app_workers_per_worker_mb",
    "reserve_mb": "app_workers_reserve_mb",
    "max_workers": "app_workers_max",
    "max_connections": "postgresql_max_connections",
    "superuser_reserved": "postgresql_superuser_reserved_connections",
    "monitoring": "postgresql_monitoring_connections",
}

MINIMUM = {
    "workers": 1,
    "pool_size": 1,
    "max_overflow": 0,
    "vcpus": 1,
    "memory_mb": 0,
    "per_worker_mb": 1,
    "reserve_mb": 0,
    "max_workers": 0,
    "max_connections": 1,
    "superuser_reserved": 0,
    "monitoring": 0,
}


class ConnectionBudgetError(ValueError):
    """Input of the wrong shape for connection_budget."""


def parse_int(value: Any) -> int | None:
    """An integer from an int or a string of digits (an optional minus sign); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit():
            return int(text)
    return None


def shown(value: Any) -> str:
    """A value as the message prints it: a non-empty string as it is, anything else as repr."""
    return value if isinstance(value, str) and value.strip() else repr(value)


def _value(key: str, value: Any, errors: list[str], prefix: str = "") -> int | None:
    """value as an integer >= MINIMUM[key]; else None, and the reason appended to errors."""
    number = parse_int(value)
    minimum = MINIMUM[key]
    if number is None or number < minimum:
        kind = "an integer" if key != "workers" else "auto or an integer"
        errors.append(f"{prefix}{VARIABLES[key]} must be {kind} >= {minimum}, got {shown(value)}")
        return None
    return number


def _workers(host: Mapping[str, Any], prefix: str, errors: list[str]) -> tuple[int | None, str]:
    """The host's worker count and where it comes from."""
    workers = host.get("workers")
    if not (isinstance(workers, str) and workers.strip() == "auto"):
        return _value("workers", workers, errors, prefix), "app_workers"
    if host.get("vcpus") is None or host.get("memory_mb") is None:
        errors.append(
            f"{prefix}app_workers is auto but the host's facts (vCPUs, memory) are missing:"
            " gather its hardware facts"
        )
        return None, "auto"
    own: list[str] = []
    args = {
        key: _value(key, host.get(key), own, prefix)
        for key in ("vcpus", "memory_mb", "per_worker_mb", "reserve_mb", "max_workers")
    }
    errors.extend(own)
    if own:
        return None, "auto"
    cores = args.pop("vcpus")
    # The app role's own computation (roles/app/vars/main.yml, __app_workers_computed).
    return gunicorn_workers(cores, **args), f"auto from {cores} vCPU/{args['memory_mb']} MB"


def connection_budget(
    app_hosts: Sequence[Mapping[str, Any]],
    max_connections: Any,
    superuser_reserved: Any,
    monitoring: Any,
) -> dict[str, Any]:
    """Every app host's workers x (pool_size + max_overflow), summed, against max_connections."""
    if isinstance(app_hosts, (str, bytes, Mapping)) or not isinstance(app_hosts, Sequence):
        raise ConnectionBudgetError(
            f"connection_budget: the input must be a list of mappings (one per app host),"
            f" got {type(app_hosts).__name__}"
        )
    errors: list[str] = []
    limits = {
        key: _value(key, value, errors)
        for key, value in (
            ("max_connections", max_connections),
            ("superuser_reserved", superuser_reserved),
            ("monitoring", monitoring),
        )
    }
    rows: list[dict[str, Any]] = []
    for index, host in enumerate(app_hosts):
        if not isinstance(host, Mapping) or not host.get("host"):
            raise ConnectionBudgetError(
                f"connection_budget: app host #{index} must be a mapping with a 'host' key,"
                f" got {host!r}"
            )
        name = str(host["host"])
        prefix = f"{name}: "
        own: list[str] = []
        workers, source = _workers(host, prefix, own)
        pool = _value("pool_size", host.get("pool_size"), own, prefix)
        overflow = _value("max_overflow", host.get("max_overflow"), own, prefix)
        errors.extend(own)
        if workers is None or pool is None or overflow is None:
            continue
        connections = workers * (pool + overflow)
        rows.append(
            {
                "host": name,
                "workers": workers,
                "workers_source": source,
                "pool_size": pool,
                "max_overflow": overflow,
                "connections": connections,
                "text": (
                    f"{name}: {workers} workers ({source}) x (app_db_pool_size {pool}"
                    f" + app_db_max_overflow {overflow}) = {connections}"
                ),
            }
        )
    app_total = sum(row["connections"] for row in rows)
    reserved = limits["superuser_reserved"] or 0
    monitor = limits["monitoring"] or 0
    needed = app_total + reserved + monitor
    maximum = limits["max_connections"]
    fits = not errors and maximum is not None and needed <= maximum
    return {
        "rows": rows,
        "errors": errors,
        "app_total": app_total,
        "needed": needed,
        "max_connections": maximum,
        "fits": fits,
        "message": _message(rows, errors, app_total, reserved, monitor, needed, maximum, fits),
    }


def _message(
    rows: list[dict[str, Any]],
    errors: list[str],
    app_total: int,
    reserved: int,
    monitoring: int,
    needed: int,
    maximum: int | None,
    fits: bool,
) -> str:
    if errors:
        return "Invalid input of the PostgreSQL connection budget: " + "; ".join(errors) + "."
    hosts = "; ".join(row["text"] for row in rows) or "none"
    sum_text = (
        f"app total {app_total} + postgresql_superuser_reserved_connections {reserved}"
        f" + postgresql_monitoring_connections {monitoring} = {needed}"
    )
    if fits:
        return (
            f"Connection budget fits: {needed} of postgresql_max_connections {maximum}."
            f" App hosts ({len(rows)}): {hosts}; {sum_text}."
        )
    return (
        f"PostgreSQL connection budget exceeded: {needed} connections needed"
        f" > postgresql_max_connections {maximum}. App hosts ({len(rows)}): {hosts};"
        f" {sum_text}. Change one of: raise postgresql_max_connections to at least {needed}"
        " (work_mem is then recomputed); lower app_workers, app_db_pool_size or"
        " app_db_max_overflow on the app hosts; or put a connection pooler (PgBouncer) in"
        " front of PostgreSQL."
    )


def _filter(app_hosts: Any, **kwargs: Any) -> dict[str, Any]:
    from ansible.errors import AnsibleFilterError

    try:
        return connection_budget(app_hosts, **kwargs)
    except ConnectionBudgetError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    except TypeError as exc:  # a missing or unknown keyword argument
        raise AnsibleFilterError(f"connection_budget: {exc}") from exc


class FilterModule:
    """fastapi_ops.stack.connection_budget"""

    def filters(self) -> dict[str, Any]:
        return {"connection_budget": _filter}

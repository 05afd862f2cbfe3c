"""PGTune's "web" workload rules as an Ansible filter (pure Python, no dependencies)."""

from __future__ import annotations

from typing import Any

from ansible_collections.fastapi_ops.stack.plugins.plugin_utils.filter_args import (
    ansible_filter,
    check_number,
)

DOCUMENTATION = r"""
name: pg_tune
short_description: PostgreSQL settings computed with PGTune's rules for a web workload
version_added: 0.1.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - Computes PostgreSQL memory, WAL, planner and parallelism settings from the host's RAM,
    CPU count, storage type and C(max_connections), with the rules of PGTune
    (U(https://pgtune.leopard.in.ua), source U(https://github.com/le0pard/pgtune),
    C(src/features/configuration/configurationSlice.js)) for the C(web) database type
    on Linux.
  - Values are returned as strings formatted exactly as PGTune prints them. Sizes use
    the largest unit (C(GB), C(MB), C(kB)) that loses no precision, for example C(4GB)
    or C(1310kB).
  - Parallel settings are omitted when fewer than 4 CPUs are given, as PGTune does
    (PostgreSQL's defaults apply then).
  - Two rule sets exist upstream. C(current) (default) is PGTune as published in 2026
    (huge_pages from shared_buffers >= 2GB, maintenance_work_mem capped at 8GB,
    work_mem at least 4MB, C(nvme) storage). C(classic) is the long-standing set it
    replaced (huge_pages from RAM >= 32GB, maintenance_work_mem capped at 2GB,
    work_mem at least 64kB).
options:
  _input:
    description: Total RAM in MB, as in C(ansible_memtotal_mb).
    type: int
    required: true
  cpus:
    description: Number of CPUs (C(ansible_processor_vcpus)). V(0) means unknown.
    type: int
    default: 0
  storage:
    description: Storage type of the data directory.
    type: str
    default: ssd
    choices: [ssd, hdd, san, nvme]
  max_connections:
    description: C(max_connections) the server will run with.
    type: int
    default: 200
  pg_version:
    description: PostgreSQL major version (10 or later).
    type: int
    default: 16
  os_type:
    description: Operating system; only C(linux) is supported.
    type: str
    default: linux
    choices: [linux]
  rules:
    description: Which upstream rule set to apply.
    type: str
    default: current
    choices: [current, classic]
"""

EXAMPLES = r"""
- name: Compute PostgreSQL settings for this host
  ansible.builtin.set_fact:
    postgresql_tuned: >-
      {{ ansible_memtotal_mb | fastapi_ops.stack.pg_tune(
           cpus=ansible_processor_vcpus, storage='ssd',
           max_connections=postgresql_max_connections, pg_version=15) }}

# 16384 | fastapi_ops.stack.pg_tune(cpus=8, max_connections=200, pg_version=16) gives
#   shared_buffers: 4GB, effective_cache_size: 12GB, maintenance_work_mem: 1GB,
#   work_mem: 20164kB, huge_pages: try, max_worker_processes: "8", ...
"""

RETURN = r"""
_value:
  description:
    - Mapping of PostgreSQL setting name to its value as a string, ready for
      C(postgresql.conf) or C(ALTER SYSTEM). Keys are C(max_connections),
      C(shared_buffers), C(effective_cache_size), C(maintenance_work_mem),
      C(checkpoint_completion_target), C(wal_buffers), C(default_statistics_target),
      C(random_page_cost), C(effective_io_concurrency), C(work_mem), C(huge_pages),
      C(min_wal_size), C(max_wal_size) and, with 4 CPUs or more,
      C(max_worker_processes), C(max_parallel_workers_per_gather),
      C(max_parallel_workers), C(max_parallel_maintenance_workers).
  type: dict
"""


KB_PER_MB = 1024
KB_PER_GB = 1024 * 1024

RANDOM_PAGE_COST = {"hdd": 4, "ssd": 1.1, "san": 1.1, "nvme": 1.1}
EFFECTIVE_IO_CONCURRENCY = {"hdd": 2, "ssd": 200, "san": 300, "nvme": 1000}
# PostgreSQL's default max_worker_processes, used by work_mem when PGTune sets none.
DEFAULT_MAX_WORKER_PROCESSES = 8


class PgTuneError(ValueError):
    """Invalid input to pg_tune."""


def format_kb(value_kb: int) -> str:
    """Format a size in kB like PGTune: the largest unit that loses no precision."""
    if value_kb % KB_PER_GB == 0:
        return f"{value_kb // KB_PER_GB}GB"
    if value_kb % KB_PER_MB == 0:
        return f"{value_kb // KB_PER_MB}MB"
    return f"{value_kb}kB"


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _wal_buffers_kb(shared_buffers_kb: int) -> int:
    # 3% of shared_buffers, at most 16MB, rounded up to 16MB from 14MB, at least 32kB.
    value = (3 * shared_buffers_kb) // 100
    max_wal = 16 * KB_PER_MB
    value = min(value, max_wal)
    if 14 * KB_PER_MB < value < max_wal:
        value = max_wal
    return max(value, 32)


def _parallel_settings(cpus: int, pg_version: int) -> dict[str, int]:
    if cpus < 4:
        return {}
    per_gather = min(-(-cpus // 2), 4)
    settings = {"max_worker_processes": cpus, "max_parallel_workers_per_gather": per_gather}
    if pg_version >= 10:
        settings["max_parallel_workers"] = cpus
    if pg_version >= 11:
        settings["max_parallel_maintenance_workers"] = min(-(-cpus // 2), 4)
    return settings


def _check_int(name: str, value: Any, minimum: int) -> int:
    return int(check_number(PgTuneError, "pg_tune", name, value, minimum, integer=True))


def pg_tune(
    memory_mb: int,
    cpus: int = 0,
    storage: str = "ssd",
    max_connections: int = 200,
    pg_version: int = 16,
    os_type: str = "linux",
    rules: str = "current",
) -> dict[str, str]:
    """Return PGTune's web-workload settings as PostgreSQL-formatted strings."""
    memory_mb = _check_int("memory (input)", memory_mb, 1)
    cpus = _check_int("cpus", cpus, 0)
    max_connections = _check_int("max_connections", max_connections, 1)
    pg_version = _check_int("pg_version", pg_version, 10)
    if os_type != "linux":
        raise PgTuneError(f"pg_tune: os_type must be 'linux', got {os_type!r}")
    if rules not in ("current", "classic"):
        raise PgTuneError(f"pg_tune: rules must be 'current' or 'classic', got {rules!r}")
    allowed = ("ssd", "hdd", "san", "nvme") if rules == "current" else ("ssd", "hdd", "san")
    if storage not in allowed:
        raise PgTuneError(f"pg_tune: storage must be one of {', '.join(allowed)}, got {storage!r}")

    total_kb = memory_mb * KB_PER_MB
    shared_buffers = total_kb // 4
    effective_cache_size = total_kb * 3 // 4
    maintenance_cap = (8 if rules == "current" else 2) * KB_PER_GB
    maintenance_work_mem = min(total_kb // 16, maintenance_cap)
    if rules == "current":
        huge_pages = "try" if shared_buffers >= 2 * KB_PER_GB else "off"
    else:
        huge_pages = "try" if total_kb >= 32 * KB_PER_GB else "off"

    parallel = _parallel_settings(cpus, pg_version)
    workers_for_work_mem = parallel.get("max_worker_processes", DEFAULT_MAX_WORKER_PROCESSES)
    # (RAM - shared_buffers) / ((max_connections + max_worker_processes) * 3), floored.
    work_mem = int((total_kb - shared_buffers) / ((max_connections + workers_for_work_mem) * 3))
    work_mem = max(work_mem, 4 * KB_PER_MB if rules == "current" else 64)

    settings = {
        "max_connections": str(max_connections),
        "shared_buffers": format_kb(shared_buffers),
        "effective_cache_size": format_kb(effective_cache_size),
        "maintenance_work_mem": format_kb(maintenance_work_mem),
        "checkpoint_completion_target": "0.9",
        "wal_buffers": format_kb(_wal_buffers_kb(shared_buffers)),
        "default_statistics_target": "100",
        "random_page_cost": _format_number(RANDOM_PAGE_COST[storage]),
        "effective_io_concurrency": str(EFFECTIVE_IO_CONCURRENCY[storage]),
        "work_mem": format_kb(work_mem),
        "huge_pages": huge_pages,
        "min_wal_size": format_kb(1024 * KB_PER_MB),
        "max_wal_size": format_kb(4096 * KB_PER_MB),
    }
    settings.update({key: str(value) for key, value in parallel.items()})
    return settings


class FilterModule:
    """fastapi_ops.stack.pg_tune"""

    def filters(self) -> dict[str, Any]:
        return {"pg_tune": ansible_filter(pg_tune, PgTuneError)}

"""Number of Gunicorn workers running Uvicorn (async) workers, from cores and memory."""

from __future__ import annotations

from typing import Any

from ansible_collections.fastapi_ops.stack.plugins.plugin_utils.filter_args import (
    ansible_filter,
    check_number,
)

DOCUMENTATION = r"""
name: gunicorn_workers
short_description: Number of Uvicorn (async) Gunicorn workers for a host
version_added: 0.1.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - Computes how many Gunicorn workers of the Uvicorn (asyncio) worker class a host
    should run.
  - "Rationale: C(2 * cores + 1) is Gunicorn's rule for B(sync) workers, which block
    on I/O and need spare processes to keep the CPUs busy. An asyncio worker serves
    many requests concurrently on one event loop, so one worker per core already
    uses the CPU; more workers only add memory, connection-pool slots and context
    switches. The count is therefore C(cores * per_core)."
  - "Each worker is a full copy of the app (interpreter, imports, DB and Redis pools),
    so the count is also bounded by the memory left after C(reserve_mb) (the OS, and
    PostgreSQL/Redis on an all-in-one host): C((memory_mb - reserve_mb) // per_worker_mb)."
  - The result is the smaller of both, at least 1, and at most O(max_workers) when
    that is set. Remember each worker holds C(pool_size + max_overflow) database
    connections; the collection checks that budget against C(max_connections).
options:
  _input:
    description: Number of CPU cores (C(ansible_processor_vcpus)).
    type: int
    required: true
  memory_mb:
    description: Total RAM in MB (C(ansible_memtotal_mb)). V(0) disables the memory bound.
    type: int
    default: 0
  per_worker_mb:
    description: Memory one worker needs at steady state, in MB.
    type: int
    default: 256
  reserve_mb:
    description: Memory kept for everything else on the host, in MB.
    type: int
    default: 512
  per_core:
    description: Workers per core (a float, e.g. V(1.5) for apps with CPU-light handlers).
    type: float
    default: 1
  max_workers:
    description: Upper bound; V(0) means none.
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Workers for this host (4 vCPU, 8 GB -> 4)
  ansible.builtin.set_fact:
    app_gunicorn_workers: >-
      {{ ansible_processor_vcpus | fastapi_ops.stack.gunicorn_workers(
           memory_mb=ansible_memtotal_mb, per_worker_mb=256, max_workers=16) }}

# 8 | fastapi_ops.stack.gunicorn_workers(memory_mb=1024) -> 2   (memory bound)
# 1 | fastapi_ops.stack.gunicorn_workers(memory_mb=512)  -> 1   (never below 1)
"""

RETURN = r"""
_value:
  description: Number of workers, at least 1.
  type: int
"""


class GunicornWorkersError(ValueError):
    """Invalid input to gunicorn_workers."""


def _number(name: str, value: Any, minimum: float) -> float:
    return check_number(GunicornWorkersError, "gunicorn_workers", name, value, minimum)


def gunicorn_workers(
    cores: Any,
    memory_mb: Any = 0,
    per_worker_mb: Any = 256,
    reserve_mb: Any = 512,
    per_core: Any = 1,
    max_workers: Any = 0,
) -> int:
    """Return min(cores * per_core, memory bound), clamped to [1, max_workers]."""
    cores_n = _number("cores (input)", cores, 1)
    memory = _number("memory_mb", memory_mb, 0)
    per_worker = _number("per_worker_mb", per_worker_mb, 1)
    reserve = _number("reserve_mb", reserve_mb, 0)
    factor = _number("per_core", per_core, 0.1)
    upper = int(_number("max_workers", max_workers, 0))

    workers = int(cores_n * factor)
    if memory:
        workers = min(workers, int((memory - reserve) // per_worker))
    if upper:
        workers = min(workers, upper)
    return max(workers, 1)


class FilterModule:
    """fastapi_ops.stack.gunicorn_workers"""

    def filters(self) -> dict[str, Any]:
        return {"gunicorn_workers": ansible_filter(gunicorn_workers, GunicornWorkersError)}

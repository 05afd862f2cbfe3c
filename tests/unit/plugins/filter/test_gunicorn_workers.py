from __future__ import annotations

import pytest
from ansible_collections.fastapi_ops.stack.plugins.filter.gunicorn_workers import (
    FilterModule,
    GunicornWorkersError,
    gunicorn_workers,
)


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((4,), {"memory_mb": 8192}, 4),  # one per core, memory is plenty
        ((8,), {"memory_mb": 1024}, 2),  # (1024 - 512) // 256 = 2: memory bound
        ((1,), {"memory_mb": 512}, 1),  # never below 1
        ((2,), {"memory_mb": 300}, 1),  # less memory than the reserve: still 1
        ((32,), {"memory_mb": 65536, "max_workers": 12}, 12),  # explicit cap
        ((4,), {"per_core": 1.5}, 6),  # memory bound disabled
        ((4,), {"memory_mb": 4096, "per_worker_mb": 1024, "reserve_mb": 0}, 4),
        (("3",), {"memory_mb": "4096"}, 3),  # facts may arrive as strings
    ],
)
def test_gunicorn_workers(args, kwargs, expected):
    assert gunicorn_workers(*args, **kwargs) == expected


def test_not_the_sync_rule():
    # 2 * cores + 1 would be 9 on 4 cores; async workers are one per core.
    assert gunicorn_workers(4, memory_mb=16384) == 4


@pytest.mark.parametrize(
    "kwargs",
    [{"cores": 0}, {"cores": "x"}, {"cores": 2, "per_worker_mb": 0}, {"cores": True}],
)
def test_invalid(kwargs):
    with pytest.raises(GunicornWorkersError):
        gunicorn_workers(**kwargs)


def test_filter_registered():
    from ansible.errors import AnsibleFilterError

    fn = FilterModule().filters()["gunicorn_workers"]
    assert fn(2, memory_mb=4096) == 2
    with pytest.raises(AnsibleFilterError):
        fn(-1)

"""pg_tune against PGTune's own test cases and hand-checked full vectors.

Upstream cases: le0pard/pgtune, src/features/configuration/__tests__/configurationSlice.test.js
(commit 01bb6447113831159c5f14fafe11f59cf2ba0964 for the "current" rules; the classic rules
are configurationSlice.js at 7d204bdb87a83b9bbbafb354df1838b2be7870d9). PGTune's selectors
return kB; the filter formats them like PGTune's configurationView (largest exact unit).
"""

from __future__ import annotations

import pytest
from ansible_collections.fastapi_ops.stack.plugins.filter.pg_tune import (
    FilterModule,
    PgTuneError,
    format_kb,
    pg_tune,
)

GB = 1024  # MB


# --- cases from PGTune's test suite ----------------------------------------------------


def test_upstream_maintenance_work_mem_caps_at_8gb_on_linux():
    # 'caps at 8GB for linux servers with extreme memory': 256GB, web, linux, PG17 -> 8388608
    assert pg_tune(256 * GB, pg_version=17)["maintenance_work_mem"] == format_kb(8388608)
    assert format_kb(8388608) == "8GB"


def test_upstream_maintenance_work_mem_below_cap():
    # 'calculates properly below the limit cap': 16GB / 16 = 1GB -> 1048576
    assert pg_tune(16 * GB, pg_version=15)["maintenance_work_mem"] == "1GB"


@pytest.mark.parametrize(("ram_gb", "expected"), [(4, "off"), (16, "try")])
def test_upstream_huge_pages(ram_gb, expected):
    # 'returns off when shared_buffers is small (< 2GB)' / 'returns try when ... (>= 2GB)'
    assert pg_tune(ram_gb * GB, pg_version=15)["huge_pages"] == expected


def test_upstream_work_mem_floor_4mb():
    # 'protects work_mem by flooring to 4MB during extreme max_connections':
    # 4GB, web, linux, PG15, 9999 connections, 4 CPUs -> 4096 kB
    assert pg_tune(4 * GB, cpus=4, max_connections=9999, pg_version=15)["work_mem"] == "4MB"


def test_upstream_parallel_pg13_12_cpus():
    out = pg_tune(8 * GB, cpus=12, pg_version=13)
    assert [out[k] for k in PARALLEL_KEYS] == ["12", "4", "12", "4"]


def test_upstream_parallel_pg10_has_no_maintenance_workers():
    out = pg_tune(8 * GB, cpus=12, pg_version=10)
    assert (out["max_worker_processes"], out["max_parallel_workers_per_gather"]) == ("12", "4")
    assert out["max_parallel_workers"] == "12"
    assert "max_parallel_maintenance_workers" not in out
    out = pg_tune(8 * GB, cpus=31, pg_version=10)
    assert (out["max_worker_processes"], out["max_parallel_workers"]) == ("31", "31")
    assert out["max_parallel_workers_per_gather"] == "4"


def test_upstream_parallel_omitted_below_4_cpus():
    # 'less 2 cpu provided': cpuNum 1 -> []
    out = pg_tune(8 * GB, cpus=1, pg_version=14)
    assert not set(PARALLEL_KEYS) & set(out)


@pytest.mark.parametrize(
    ("storage", "cost", "io"),
    [("hdd", "4", "2"), ("ssd", "1.1", "200"), ("san", "1.1", "300"), ("nvme", "1.1", "1000")],
)
def test_upstream_storage(storage, cost, io):
    out = pg_tune(8 * GB, storage=storage)
    assert (out["random_page_cost"], out["effective_io_concurrency"]) == (cost, io)


def test_upstream_web_defaults():
    # selectMaxConnections (web) = 200, selectDefaultStatisticsTarget (web) = 100
    out = pg_tune(8 * GB)
    assert out["max_connections"] == "200"
    assert out["default_statistics_target"] == "100"


# --- full vectors (hand-checked against the upstream formulas) ---------------------------

PARALLEL_KEYS = [
    "max_worker_processes",
    "max_parallel_workers_per_gather",
    "max_parallel_workers",
    "max_parallel_maintenance_workers",
]


def test_full_16gb_8cpu_ssd():
    # work_mem = (16GB - 4GB) / ((200 + 8) * 3) = 12582912 / 624 = 20164 kB
    assert pg_tune(16 * GB, cpus=8, storage="ssd", max_connections=200, pg_version=16) == {
        "max_connections": "200",
        "shared_buffers": "4GB",
        "effective_cache_size": "12GB",
        "maintenance_work_mem": "1GB",
        "checkpoint_completion_target": "0.9",
        "wal_buffers": "16MB",
        "default_statistics_target": "100",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "work_mem": "20164kB",
        "huge_pages": "try",
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
        "max_worker_processes": "8",
        "max_parallel_workers_per_gather": "4",
        "max_parallel_workers": "8",
        "max_parallel_maintenance_workers": "4",
    }


def test_full_4gb_2cpu_hdd_uses_default_worker_count_for_work_mem():
    # < 4 CPUs: no parallel keys, work_mem uses PG's default 8 workers:
    # (4GB - 1GB) / ((100 + 8) * 3) = 3145728 / 324 = 9709 kB
    out = pg_tune(4 * GB, cpus=2, storage="hdd", max_connections=100, pg_version=15)
    assert out == {
        "max_connections": "100",
        "shared_buffers": "1GB",
        "effective_cache_size": "3GB",
        "maintenance_work_mem": "256MB",
        "checkpoint_completion_target": "0.9",
        "wal_buffers": "16MB",
        "default_statistics_target": "100",
        "random_page_cost": "4",
        "effective_io_concurrency": "2",
        "work_mem": "9709kB",
        "huge_pages": "off",
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
    }


def test_small_memory_wal_buffers_and_odd_sizes():
    # 1000 MB (not a power of two, like ansible_memtotal_mb): 256000 kB shared_buffers,
    # wal_buffers = 3% = 7680 kB = 7680kB ("7680kB" since 7680 is 7.5MB)
    out = pg_tune(1000, cpus=1)
    assert out["shared_buffers"] == "250MB"
    assert out["effective_cache_size"] == "750MB"
    assert out["wal_buffers"] == "7680kB"
    assert out["huge_pages"] == "off"


def test_wal_buffers_minimum_32kb():
    assert pg_tune(1, cpus=1)["wal_buffers"] == "32kB"


def test_classic_rules():
    # classic: maintenance_work_mem capped at 2GB, huge_pages only from 32GB RAM,
    # work_mem floor 64kB: (2GB - 512MB) / ((200 + 4) * 3) = 1572864 / 612 = 2570 kB
    assert pg_tune(256 * GB, rules="classic")["maintenance_work_mem"] == "2GB"
    assert pg_tune(16 * GB, rules="classic")["huge_pages"] == "off"
    assert pg_tune(32 * GB, rules="classic")["huge_pages"] == "try"
    assert pg_tune(2 * GB, cpus=4, rules="classic")["work_mem"] == "2570kB"
    assert pg_tune(2 * GB, cpus=4)["work_mem"] == "4MB"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_mb": 0},
        {"memory_mb": "lots"},
        {"memory_mb": 1024, "storage": "floppy"},
        {"memory_mb": 1024, "rules": "classic", "storage": "nvme"},
        {"memory_mb": 1024, "pg_version": 9},
        {"memory_mb": 1024, "os_type": "windows"},
        {"memory_mb": 1024, "max_connections": 0},
        {"memory_mb": True},
    ],
)
def test_invalid_input(kwargs):
    with pytest.raises(PgTuneError):
        pg_tune(**kwargs)


def test_filter_registered_and_raises_filter_error():
    from ansible.errors import AnsibleFilterError

    fn = FilterModule().filters()["pg_tune"]
    assert fn(2048, cpus=2)["shared_buffers"] == "512MB"
    with pytest.raises(AnsibleFilterError, match="storage"):
        fn(2048, storage="tape")

from __future__ import annotations

import pytest
from ansible_collections.fastapi_ops.stack.plugins.filter.connection_budget import (
    ConnectionBudgetError,
    FilterModule,
    connection_budget,
)
from ansible_collections.fastapi_ops.stack.plugins.filter.gunicorn_workers import (
    gunicorn_workers,
)

LIMITS = {"max_connections": 100, "superuser_reserved": 3, "monitoring": 3}
# The app role's defaults (roles/app/defaults/main.yml) for an auto worker count.
AUTO = {"per_worker_mb": 256, "reserve_mb": 512, "max_workers": 16}


def host(name="app1", workers=4, pool_size=5, max_overflow=5, **extra):
    return {
        "host": name,
        "workers": workers,
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        **extra,
    }


def test_sum_over_hosts_plus_reserved_and_monitoring():
    budget = connection_budget(
        [host("app1", 4, 5, 5), host("app2", 2, 10, 0)], **LIMITS
    )  # 4 x 10 + 2 x 10
    assert [row["connections"] for row in budget["rows"]] == [40, 20]
    assert budget["app_total"] == 60
    assert budget["needed"] == 66
    assert budget["fits"] is True
    assert budget["errors"] == []
    assert budget["rows"][0]["text"] == (
        "app1: 4 workers (app_workers) x (app_db_pool_size 5 + app_db_max_overflow 5) = 40"
    )
    assert budget["message"].startswith(
        "Connection budget fits: 66 of postgresql_max_connections 100."
    )


def test_exactly_max_connections_fits_one_more_does_not():
    # 9 x 10 + 3 + 3 = 96
    assert connection_budget(
        [host(workers=9)], max_connections=96, superuser_reserved=3, monitoring=3
    )["fits"]
    budget = connection_budget(
        [host(workers=9)], max_connections=95, superuser_reserved=3, monitoring=3
    )
    assert budget["fits"] is False
    assert budget["needed"] == 96


def test_message_names_every_number_and_what_to_change():
    budget = connection_budget(
        [host("app1", 4), host("app2", 4)], max_connections=20, superuser_reserved=3, monitoring=2
    )
    message = budget["message"]
    assert not budget["fits"]
    assert "PostgreSQL connection budget exceeded: 85 connections needed" in message
    assert "> postgresql_max_connections 20" in message
    assert "App hosts (2): app1: 4 workers (app_workers)" in message
    assert (
        "app total 80 + postgresql_superuser_reserved_connections 3"
        " + postgresql_monitoring_connections 2 = 85"
    ) in message
    assert "raise postgresql_max_connections to at least 85" in message
    assert "lower app_workers, app_db_pool_size or app_db_max_overflow" in message


def test_auto_workers_are_computed_like_the_app_role():
    row = host(workers="auto", vcpus=2, memory_mb=1024, **AUTO)
    budget = connection_budget([row], **LIMITS)
    expected = gunicorn_workers(
        2, memory_mb=1024, per_worker_mb=256, reserve_mb=512, max_workers=16
    )
    assert expected == 2  # (1024 - 512) // 256
    assert budget["rows"][0]["workers"] == expected
    assert budget["rows"][0]["workers_source"] == "auto from 2 vCPU/1024 MB"
    assert "app1: 2 workers (auto from 2 vCPU/1024 MB) x" in budget["message"]


@pytest.mark.parametrize(
    ("facts", "workers"),
    [
        ({"vcpus": 8, "memory_mb": 65536}, 8),  # one per core
        ({"vcpus": 8, "memory_mb": 1024}, 2),  # memory bound
        ({"vcpus": 64, "memory_mb": 262144}, 16),  # app_workers_max
        ({"vcpus": 1, "memory_mb": 256}, 1),  # never below 1
        ({"vcpus": "4", "memory_mb": "8192"}, 4),  # facts or -e values as strings
    ],
)
def test_auto_workers(facts, workers):
    row = host(workers="auto", **facts, **AUTO)
    assert connection_budget([row], **LIMITS)["rows"][0]["workers"] == workers


def test_strings_of_digits_are_numbers():
    budget = connection_budget(
        [host(workers="3", pool_size="2", max_overflow="0")],
        max_connections="20",
        superuser_reserved="3",
        monitoring="3",
    )
    assert budget["app_total"] == 6
    assert budget["needed"] == 12
    assert budget["fits"]


def test_no_app_host_needs_only_the_reserve():
    budget = connection_budget([], **LIMITS)
    assert budget["rows"] == []
    assert budget["needed"] == 6
    assert budget["fits"]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (host(workers="many"), "app1: app_workers must be auto or an integer >= 1, got many"),
        (host(workers=0), "app1: app_workers must be auto or an integer >= 1, got 0"),
        (host(workers=2.5), "app1: app_workers must be auto or an integer >= 1, got 2.5"),
        (host(workers=True), "app1: app_workers must be auto or an integer >= 1, got True"),
        (host(workers=""), "app1: app_workers must be auto or an integer >= 1, got ''"),
        (host(pool_size=-1), "app1: app_db_pool_size must be an integer >= 1, got -1"),
        (host(pool_size="-1"), "app1: app_db_pool_size must be an integer >= 1, got -1"),
        (host(pool_size=None), "app1: app_db_pool_size must be an integer >= 1, got None"),
        (host(max_overflow="x"), "app1: app_db_max_overflow must be an integer >= 0, got x"),
        (
            host(workers="auto", **AUTO),
            "app1: app_workers is auto but the host's facts (vCPUs, memory) are missing",
        ),
        (
            host(
                workers="auto",
                vcpus=2,
                memory_mb=2048,
                per_worker_mb=0,
                reserve_mb=512,
                max_workers=16,
            ),
            "app1: app_workers_per_worker_mb must be an integer >= 1, got 0",
        ),
        (
            host(
                workers="auto",
                vcpus=2,
                memory_mb=2048,
                per_worker_mb=256,
                reserve_mb=512,
                max_workers="lots",
            ),
            "app1: app_workers_max must be an integer >= 0, got lots",
        ),
    ],
)
def test_invalid_host_values_are_errors_naming_the_variable(row, error):
    budget = connection_budget([row, host("app2", 1)], **LIMITS)
    assert budget["fits"] is False
    assert any(e.startswith(error) for e in budget["errors"]), budget["errors"]
    assert budget["message"].startswith("Invalid input of the PostgreSQL connection budget: ")
    assert error in budget["message"]
    # The valid host still counts.
    assert [r["host"] for r in budget["rows"]] == ["app2"]


def test_every_error_is_reported_at_once():
    budget = connection_budget(
        [host("app1", workers="x"), host("app2", pool_size=0, max_overflow=-1)],
        max_connections="lots",
        superuser_reserved=-1,
        monitoring=3,
    )
    assert budget["errors"] == [
        "postgresql_max_connections must be an integer >= 1, got lots",
        "postgresql_superuser_reserved_connections must be an integer >= 0, got -1",
        "app1: app_workers must be auto or an integer >= 1, got x",
        "app2: app_db_pool_size must be an integer >= 1, got 0",
        "app2: app_db_max_overflow must be an integer >= 0, got -1",
    ]
    assert budget["max_connections"] is None
    assert budget["fits"] is False


@pytest.mark.parametrize(
    "app_hosts",
    ["app1", {"host": "app1"}, None, [{"workers": 2}], ["app1"]],
)
def test_input_of_the_wrong_shape_raises(app_hosts):
    with pytest.raises(ConnectionBudgetError, match="connection_budget: "):
        connection_budget(app_hosts, **LIMITS)


def test_filter_registered():
    from ansible.errors import AnsibleFilterError

    fn = FilterModule().filters()["connection_budget"]
    assert fn([host()], **LIMITS)["fits"]
    with pytest.raises(AnsibleFilterError, match="connection_budget: the input must be a list"):
        fn("app1", **LIMITS)
    with pytest.raises(AnsibleFilterError, match="connection_budget: .*monitoring"):
        fn([host()], max_connections=100, superuser_reserved=3)

from __future__ import annotations

import pytest
from ansible_collections.fastapi_ops.stack.plugins.filter.keepalive_order import (
    FilterModule,
    KeepaliveOrderError,
    keepalive_order,
)


def test_lower_upstream_timeout_is_ok():
    order = keepalive_order({"lb1": 5, "lb2": 4}, {"app1": 10, "app2": 12})
    assert order["ok"] is True
    assert order["errors"] == []
    assert (order["lb_max"], order["app_min"]) == (5, 10)
    assert order["message"] == (
        "Nginx closes idle upstream connections first: nginx_upstream_keepalive_timeout"
        " at most 5 s (lb1) < app_keepalive at least 10 s (app1)."
    )


@pytest.mark.parametrize(("lb", "app"), [(10, 10), (11, 10)])
def test_equal_or_higher_upstream_timeout_fails(lb, app):
    order = keepalive_order({"lb1": lb}, {"app1": app})
    assert order["ok"] is False
    assert order["errors"] == []


def test_message_names_the_hosts_and_numbers_to_change():
    order = keepalive_order({"lb1": 5, "lb2": 12, "lb3": 9}, {"app1": 10, "app2": 9, "app3": 30})
    assert order["ok"] is False
    assert (order["lb_max"], order["app_min"]) == (12, 9)
    message = order["message"]
    assert "nginx_upstream_keepalive_timeout 12 s on lb2 is not lower than" in message
    assert "app_keepalive 9 s on app2" in message
    # Every lb host at or above the lowest app keep-alive, every app host at or below the
    # highest lb timeout.
    assert "lower nginx_upstream_keepalive_timeout to at most 8 on lb2, lb3" in message
    assert "or raise app_keepalive to at least 13 on app1, app2." in message
    assert "(502s)" in message


def test_app_keepalive_of_one_second_can_only_be_raised():
    order = keepalive_order({"lb1": 1}, {"app1": 1})
    assert "lower nginx_upstream_keepalive_timeout to" not in order["message"]
    assert order["message"].endswith("Change: raise app_keepalive to at least 2 on app1.")


@pytest.mark.parametrize(("lbs", "apps"), [({}, {"app1": 10}), ({"lb1": 5}, {}), ({}, {})])
def test_nothing_to_compare_is_ok(lbs, apps):
    order = keepalive_order(lbs, apps)
    assert order["ok"] is True
    assert "nothing to compare" in order["message"]


def test_strings_of_digits_are_seconds():
    assert keepalive_order({"lb1": "5"}, {"app1": "10"})["ok"] is True
    assert keepalive_order({"lb1": "10"}, {"app1": "5"})["ok"] is False


@pytest.mark.parametrize(
    ("lbs", "apps", "error"),
    [
        (
            {"lb1": "5s"},
            {"app1": 10},
            "lb1: nginx_upstream_keepalive_timeout must be an integer >= 1 (seconds), got 5s",
        ),
        (
            {"lb1": 0},
            {"app1": 10},
            "lb1: nginx_upstream_keepalive_timeout must be an integer >= 1 (seconds), got 0",
        ),
        (
            {"lb1": 5},
            {"app1": None},
            "app1: app_keepalive must be an integer >= 1 (seconds), got None",
        ),
        (
            {"lb1": 5},
            {"app1": 2.5},
            "app1: app_keepalive must be an integer >= 1 (seconds), got 2.5",
        ),
        (
            {"lb1": 5},
            {"app1": True},
            "app1: app_keepalive must be an integer >= 1 (seconds), got True",
        ),
    ],
)
def test_invalid_values_are_errors(lbs, apps, error):
    order = keepalive_order(lbs, apps)
    assert order["ok"] is False
    assert order["errors"] == [error]
    assert order["message"] == f"Invalid keep-alive settings: {error}."


@pytest.mark.parametrize(("lbs", "apps"), [([5], {"app1": 10}), ({"lb1": 5}, "10")])
def test_input_of_the_wrong_shape_raises(lbs, apps):
    with pytest.raises(KeepaliveOrderError, match="must be a mapping of host name to seconds"):
        keepalive_order(lbs, apps)


def test_filter_registered():
    from ansible.errors import AnsibleFilterError

    fn = FilterModule().filters()["keepalive_order"]
    assert fn({"lb1": 5}, {"app1": 10})["ok"]
    with pytest.raises(AnsibleFilterError, match="keepalive_order: "):
        fn(5, {"app1": 10})

"""sentinel_hosts: three Sentinels whatever the size of the cache group."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.fastapi_ops.stack.plugins.filter.sentinel_hosts import sentinel_hosts

ALL = ["c1", "c2", "c3", "mon", "lb", "app"]


def test_no_sentinel_without_replicas():
    assert sentinel_hosts({"all": ALL, "cache": ["c1"]}) == []
    assert sentinel_hosts({"all": ALL}) == []


def test_every_cache_host_from_three_on():
    assert sentinel_hosts({"all": ALL, "cache": ["c1", "c2", "c3"], "monitoring": ["mon"]}) == [
        "c1",
        "c2",
        "c3",
    ]


def test_two_cache_hosts_borrow_monitoring_then_lb_then_app():
    groups = {"all": ALL, "cache": ["c1", "c2"], "monitoring": ["mon"], "lb": ["lb"]}
    assert sentinel_hosts(groups) == ["c1", "c2", "mon"]
    del groups["monitoring"]
    assert sentinel_hosts(groups) == ["c1", "c2", "lb"]
    # A host that is also a cache host is no third machine.
    assert sentinel_hosts({"all": ALL, "cache": ["c1", "c2"], "app": ["c1", "app"]}) == [
        "c1",
        "c2",
        "app",
    ]


def test_an_explicit_third_host_wins():
    groups = {"all": ALL, "cache": ["c1", "c2"], "monitoring": ["mon"]}
    assert sentinel_hosts(groups, "c3") == ["c1", "c2", "c3"]


@pytest.mark.parametrize("extra", ["c1", "nowhere"])
def test_a_bad_third_host_is_refused(extra):
    with pytest.raises(AnsibleFilterError, match="outside cache"):
        sentinel_hosts({"all": ALL, "cache": ["c1", "c2"]}, extra)


def test_two_cache_hosts_alone_are_refused():
    with pytest.raises(AnsibleFilterError, match="third Sentinel"):
        sentinel_hosts({"all": ["c1", "c2", "db"], "cache": ["c1", "c2"], "db": ["db"]})

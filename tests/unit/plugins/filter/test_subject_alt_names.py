from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.fastapi_ops.stack.plugins.filter.subject_alt_names import (
    FilterModule,
    subject_alt_names,
)


def test_addresses_are_ip_sans_and_names_dns_sans_in_order_without_repeats():
    names = ["198.18.0.10", "db1", "198.18.0.10", "fd00::1", "127.0.0.1", "localhost", "", "db1"]
    assert subject_alt_names(names) == [
        "IP:198.18.0.10",
        "DNS:db1",
        "IP:fd00::1",
        "IP:127.0.0.1",
        "DNS:localhost",
    ]


@pytest.mark.parametrize("name", ["198.18.0", "db-1.example.com", "a:b", "10.0.0.1.example"])
def test_what_is_not_an_address_is_a_dns_name(name):
    assert subject_alt_names([name]) == [f"DNS:{name}"]


@pytest.mark.parametrize("bad", ["198.18.0.10", None, 7])
def test_a_single_value_is_refused(bad):
    with pytest.raises(AnsibleFilterError, match="expects a list"):
        subject_alt_names(bad)


def test_registered_under_its_name():
    assert FilterModule().filters()["subject_alt_names"] is subject_alt_names

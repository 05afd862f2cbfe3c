"""A host's address on the private network, as every role derives peer addresses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DOCUMENTATION = r"""
name: private_address
short_description: A host's address on the private network
version_added: 0.1.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - Returns the inventory host's C(private_address), else its C(ansible_host), else its
    name. Every role derives upstreams, pg_hba entries, firewall sources and scrape targets
    from group membership through this filter, so one host variable moves a service.
options:
  _input:
    description: Inventory hostname.
    type: str
    required: true
  hostvars:
    description: The C(hostvars) magic variable.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Addresses of every app host
  ansible.builtin.debug:
    msg: "{{ groups['app'] | map('fastapi_ops.stack.private_address', hostvars) | list }}"
"""

RETURN = r"""
_value:
  description: The address (or name) to reach the host on the private network.
  type: str
"""


def private_address(host: str, hostvars: Mapping[str, Mapping[str, Any]]) -> str:
    """private_address, else ansible_host, else the inventory name."""
    hv = hostvars[host] if host in hostvars else {}
    for key in ("private_address", "ansible_host"):
        value = hv[key] if key in hv else None
        if value:
            return str(value)
    return str(host)


class FilterModule:
    """fastapi_ops.stack.private_address"""

    def filters(self) -> dict[str, Any]:
        return {"private_address": private_address}

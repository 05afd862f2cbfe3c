"""Subject alternative names of a certificate from the names and addresses it must cover."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: subject_alt_names
short_description: Subject alternative names (IP:/DNS:) from names and addresses
version_added: 0.2.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - Turns each entry into C(IP:address) when it is an IPv4 or IPv6 address, else into
    C(DNS:name), and drops repeats, keeping the order. Every role that signs a certificate
    (PostgreSQL, etcd, pgBackRest, Nginx's self-signed one) names its hosts through this
    filter, so a client that dials an address finds it as an IP SAN, which TLS clients
    compare addresses with.
options:
  _input:
    description: Host names and addresses; empty entries are skipped.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: The SANs of a server reached by its private address and by name
  ansible.builtin.debug:
    msg: >-
      {{ [private_address, inventory_hostname, '127.0.0.1', 'localhost']
         | fastapi_ops.stack.subject_alt_names }}
    # ['IP:198.18.0.10', 'DNS:db1', 'IP:127.0.0.1', 'DNS:localhost']
"""

RETURN = r"""
_value:
  description: The names, each with its C(IP:) or C(DNS:) prefix, without repeats.
  type: list
  elements: str
"""


def subject_alt_names(names: Iterable[Any]) -> list[str]:
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise AnsibleFilterError(
            f"subject_alt_names expects a list of names and addresses, got {names!r}"
        )
    sans: list[str] = []
    for name in (str(n).strip() for n in names):
        if not name:
            continue
        try:
            san = f"IP:{ipaddress.ip_address(name)}"
        except ValueError:
            san = f"DNS:{name}"
        if san not in sans:
            sans.append(san)
    return sans


class FilterModule:
    """fastapi_ops.stack.subject_alt_names"""

    def filters(self) -> dict[str, Any]:
        return {"subject_alt_names": subject_alt_names}

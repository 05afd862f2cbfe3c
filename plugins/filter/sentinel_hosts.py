"""Where the Redis Sentinels run: the one rule the redis role and site.yml share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: sentinel_hosts
short_description: The hosts that run a Redis Sentinel
version_added: 0.4.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - With one cache host or none there is no replication and no Sentinel (an empty list).
  - With three cache hosts or more, every cache host runs a Sentinel.
  - "With two, a failover needs a majority of three Sentinels, so a third one runs on a host
    outside C(cache): C(extra) when given, else the first host of C(monitoring), then
    C(lb), then C(app) that is not a cache host. The quorum is then 2 of 3: losing any one
    machine, the master's included, leaves two Sentinels to agree and elect a leader."
  - Fails when two cache hosts have no third host to go to.
options:
  _input:
    description: The C(groups) magic variable.
    type: dict
    required: true
  extra:
    description: Inventory name of the third Sentinel's host with two cache hosts.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Sentinel hosts
  ansible.builtin.debug:
    msg: "{{ groups | fastapi_ops.stack.sentinel_hosts(redis_sentinel_extra_host) }}"
"""

RETURN = r"""
_value:
  description: Inventory names, cache hosts first.
  type: list
  elements: str
"""

# Where a third Sentinel goes with two cache hosts: hosts that run anyway and do not
# share a failure with the cache tier.
EXTRA_GROUPS = ("monitoring", "lb", "app")


def sentinel_hosts(groups: Mapping[str, Sequence[str]], extra: str = "") -> list[str]:
    cache = list(groups.get("cache", []))
    if len(cache) < 2:
        return []
    if len(cache) > 2:
        return cache
    if extra:
        if extra in cache or extra not in groups.get("all", [extra]):
            raise AnsibleFilterError(
                f"sentinel_hosts: extra host {extra!r} must be an inventory host outside cache"
            )
        return [*cache, extra]
    for group in EXTRA_GROUPS:
        for host in groups.get(group, []):
            if host not in cache:
                return [*cache, host]
    raise AnsibleFilterError(
        "sentinel_hosts: two cache hosts need a third Sentinel: add a monitoring, lb or app"
        " host outside cache, or set redis_sentinel_extra_host"
    )


class FilterModule:
    """fastapi_ops.stack.sentinel_hosts"""

    def filters(self) -> dict[str, Any]:
        return {"sentinel_hosts": sentinel_hosts}

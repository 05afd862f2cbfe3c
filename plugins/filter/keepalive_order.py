"""Keep-alive ordering between Nginx and the app: Nginx closes idle connections first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DOCUMENTATION = r"""
name: keepalive_order
short_description: Check that Nginx drops idle upstream connections before the app does
version_added: 0.2.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - "Nginx keeps idle connections to its upstream members for C(keepalive_timeout)
    (C(nginx_upstream_keepalive_timeout)); the app (Gunicorn) closes an idle connection
    after its own keep-alive (C(app_keepalive)). When the app's is not longer, the app may
    close a connection at the instant Nginx writes a request into it: a 502 for a request
    the app never saw. The rule: every lb host's timeout is lower than every app host's
    keep-alive."
  - It is the only implementation of this rule in the collection; the preflight playbook
    (C(playbooks/preflight.yml)) calls it once, before any host changes, with each value
    read from the inventory or else from the default of the role that owns it.
  - Invalid values do not raise; they are listed in RV(_value.errors) (and C(ok) is
    false). The message names the hosts, the numbers and which to change.
options:
  _input:
    description:
      - The lb hosts' upstream keep-alive timeouts in seconds, host name to integer >= 1
        (C(nginx_upstream_keepalive_timeout)). Strings of digits are accepted.
    type: dict
    required: true
  app_keepalives:
    description:
      - The upstream (app) hosts' keep-alives in seconds, host name to integer >= 1
        (C(app_keepalive)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Check that Nginx drops idle upstream connections before the app does
  ansible.builtin.assert:
    that: order.ok
    fail_msg: "{{ order.message }}"
  vars:
    order: "{{ {'lb1': 5} | fastapi_ops.stack.keepalive_order({'app1': 10, 'app2': 10}) }}"

# {'lb1': 10} | fastapi_ops.stack.keepalive_order({'app1': 10}) -> ok false, message:
#   "... nginx_upstream_keepalive_timeout 10 s on lb1 is not lower than app_keepalive 10 s
#   on app1 ... lower nginx_upstream_keepalive_timeout to at most 9 on lb1, or raise
#   app_keepalive to at least 11 on app1."
"""

RETURN = r"""
_value:
  description: Whether the order holds, the numbers compared and a message.
  type: dict
  contains:
    ok:
      description:
        - No error, and the highest lb timeout is lower than the lowest app keep-alive
          (true when either side has no host).
      type: bool
    errors:
      description: One message per invalid value; empty when valid.
      type: list
      elements: str
    lb_max:
      description: Highest upstream keep-alive timeout of the lb hosts, V(None) without a valid one.
      type: int
    app_min:
      description: Lowest keep-alive of the app hosts, V(None) without a valid one.
      type: int
    message:
      description:
        - The errors, or the comparison; when it fails, which hosts' numbers to change
          and to what.
      type: str
"""

LB_VARIABLE = "nginx_upstream_keepalive_timeout"
APP_VARIABLE = "app_keepalive"


class KeepaliveOrderError(ValueError):
    """Input of the wrong shape for keepalive_order."""


def _seconds(values: Any, variable: str, errors: list[str]) -> dict[str, int]:
    """The valid integer values (>= 1) by host; the invalid ones appended to errors."""
    if not isinstance(values, Mapping):
        raise KeepaliveOrderError(
            f"keepalive_order: the {variable} values must be a mapping of host name to"
            f" seconds, got {type(values).__name__}"
        )
    valid: dict[str, int] = {}
    for host, value in values.items():
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = int(value)
        elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            number = int(value)
        if number is None or number < 1:
            shown = value if isinstance(value, str) and value.strip() else repr(value)
            errors.append(f"{host}: {variable} must be an integer >= 1 (seconds), got {shown}")
        else:
            valid[str(host)] = number
    return valid


def _at(values: dict[str, int], number: int) -> str:
    return ", ".join(sorted(host for host, value in values.items() if value == number))


def keepalive_order(lb_timeouts: Any, app_keepalives: Any) -> dict[str, Any]:
    """ok when max(lb_timeouts) < min(app_keepalives); the message says what to change."""
    errors: list[str] = []
    lbs = _seconds(lb_timeouts, LB_VARIABLE, errors)
    apps = _seconds(app_keepalives, APP_VARIABLE, errors)
    lb_max = max(lbs.values()) if lbs else None
    app_min = min(apps.values()) if apps else None
    result: dict[str, Any] = {"errors": errors, "lb_max": lb_max, "app_min": app_min}
    if errors:
        message = "Invalid keep-alive settings: " + "; ".join(errors) + "."
        return dict(result, ok=False, message=message)
    if lb_max is None or app_min is None:
        message = "Keep-alive ordering: no lb host or no app host, nothing to compare."
        return dict(result, ok=True, message=message)
    if lb_max < app_min:
        message = (
            f"Nginx closes idle upstream connections first: {LB_VARIABLE} at most {lb_max} s"
            f" ({_at(lbs, lb_max)}) < {APP_VARIABLE} at least {app_min} s ({_at(apps, app_min)})."
        )
        return dict(result, ok=True, message=message)
    too_long = sorted(host for host, value in lbs.items() if value >= app_min)
    too_short = sorted(host for host, value in apps.items() if value <= lb_max)
    changes = []
    if app_min > 1:
        changes.append(f"lower {LB_VARIABLE} to at most {app_min - 1} on {', '.join(too_long)}")
    changes.append(f"raise {APP_VARIABLE} to at least {lb_max + 1} on {', '.join(too_short)}")
    message = (
        f"{LB_VARIABLE} must be lower than {APP_VARIABLE}, or Nginx reuses connections the"
        f" app has just closed (502s): {LB_VARIABLE} {lb_max} s on {_at(lbs, lb_max)} is not"
        f" lower than {APP_VARIABLE} {app_min} s on {_at(apps, app_min)}."
        f" {'Change one of' if len(changes) > 1 else 'Change'}: {', or '.join(changes)}."
    )
    return dict(result, ok=False, message=message)


def _filter(lb_timeouts: Any, app_keepalives: Any) -> dict[str, Any]:
    try:
        return keepalive_order(lb_timeouts, app_keepalives)
    except KeepaliveOrderError as exc:
        from ansible.errors import AnsibleFilterError

        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """fastapi_ops.stack.keepalive_order"""

    def filters(self) -> dict[str, Any]:
        return {"keepalive_order": _filter}

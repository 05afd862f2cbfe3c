"""Adjust a Prometheus rule file's text for one inventory: `for:` and `keep_firing_for:`
durations and the runbook links' base, everything else (comments included) kept as it is."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

DOCUMENTATION = r"""
name: alert_rules
short_description: Set the for/keep_firing_for of named alerts and the runbook URL in rule text
version_added: 0.2.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - The prometheus role ships its rule files as they are unit-tested with promtool; an
    inventory may shorten or lengthen how long an alert must hold before it fires (a lab
    that drills the alerting path in seconds), and may host the runbooks elsewhere.
  - Works on the text line by line (C(- alert NAME), then its C(for) and
    C(keep_firing_for) lines), so comments and layout stay; the result is still checked
    with C(promtool check rules).
  - Only lines that exist are changed; an alert without a C(for) (or C(keep_firing_for))
    line gets none added.
options:
  _input:
    description: The rule file's text.
    type: str
    required: true
  for_overrides:
    description: Alert name to Prometheus duration (C(10s), C(1m)).
    type: dict
    default: {}
  keep_firing_overrides:
    description: Alert name to the C(keep_firing_for) duration.
    type: dict
    default: {}
  runbook_base:
    description: The runbook base the files use (the prometheus role's README URL).
    type: str
    default: ""
  runbook_url:
    description: What replaces O(runbook_base); empty, nothing is replaced.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Install a rule file with PostgresDown after 10 s
  ansible.builtin.copy:
    content: >-
      {{ lookup('file', 'targets.yml', rstrip=false)
         | fastapi_ops.stack.alert_rules({'PostgresDown': '10s'}) }}
    dest: /etc/prometheus/rules.d/targets.yml
    mode: "0640"
    validate: promtool check rules %s
"""

RETURN = r"""
_value:
  description: The rule file's text with those changes.
  type: str
"""

ALERT = re.compile(r"^\s*- alert:\s*(\S+)\s*$")
FOR = re.compile(r"^(\s*)(for|keep_firing_for):\s*\S+\s*$")
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


class AlertRulesError(ValueError):
    """A duration that is not one."""


def _durations(overrides: Mapping[str, Any] | None) -> dict[str, str]:
    durations = {str(k): str(v) for k, v in (overrides or {}).items()}
    bad = sorted(f"{k}: {v}" for k, v in durations.items() if not DURATION.match(v))
    if bad:
        raise AlertRulesError(f"not Prometheus durations: {', '.join(bad)}")
    return durations


def alert_rules(
    text: str,
    for_overrides: Mapping[str, Any] | None = None,
    runbook_base: str = "",
    runbook_url: str = "",
    keep_firing_overrides: Mapping[str, Any] | None = None,
) -> str:
    overrides = {
        "for": _durations(for_overrides),
        "keep_firing_for": _durations(keep_firing_overrides),
    }
    out, alert = [], None
    for line in text.split("\n"):
        match = ALERT.match(line)
        if match:
            alert = match.group(1)
        match = FOR.match(line)
        if match and alert in overrides[match.group(2)]:
            line = f"{match.group(1)}{match.group(2)}: {overrides[match.group(2)][alert]}"
        out.append(line)
    result = "\n".join(out)
    if runbook_base and runbook_url and runbook_url != runbook_base:
        result = result.replace(runbook_base, runbook_url)
    return result


def _filter(
    text: Any,
    for_overrides: Any = None,
    runbook_base: str = "",
    runbook_url: str = "",
    keep_firing_overrides: Any = None,
) -> str:
    try:
        return alert_rules(
            str(text), for_overrides, runbook_base, runbook_url, keep_firing_overrides
        )
    except AlertRulesError as exc:
        from ansible.errors import AnsibleFilterError

        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """fastapi_ops.stack.alert_rules"""

    def filters(self) -> dict[str, Any]:
        return {"alert_rules": _filter}

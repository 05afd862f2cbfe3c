"""The default of another role's variable, read from that role's defaults file."""
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION/EXAMPLES/RETURN come before imports)

from __future__ import annotations

DOCUMENTATION = r"""
name: role_default
short_description: The default of a variable owned by another role of this collection
version_added: 0.2.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - A role that reads another host's variable (the lb hosts read the app hosts'
    C(app_port), Prometheus reads their C(app_health_path)) cannot see that host's role
    defaults, only its inventory. Its fallback is the owner role's default, read here from
    C(roles/<role>/defaults/main.yml) of this collection, so that each default is written
    once, in the role that owns the variable.
  - Only literal defaults can be read (numbers, strings, lists, mappings without
    C({{ }})); a templated default depends on the owner's host and is refused.
options:
  _terms:
    description: Names of variables defined in the role's C(defaults/main.yml).
    required: true
    type: list
    elements: str
  role:
    description: The role of this collection that owns the variables, e.g. V(app).
    required: true
    type: str
"""

EXAMPLES = r"""
- name: The app hosts' port, from the inventory or else the app role's default
  ansible.builtin.debug:
    msg: >-
      {{ hostvars[item].app_port
         | default(lookup('fastapi_ops.stack.role_default', 'app_port', role='app')) }}
  loop: "{{ groups['app'] }}"
"""

RETURN = r"""
_raw:
  description: The default of each variable, in the order asked.
  type: list
  elements: raw
"""

from copy import deepcopy
from functools import cache
from pathlib import Path

import yaml
from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

ROLES = Path(__file__).resolve().parents[2] / "roles"


# Read once per role and run: defaults are templated often, the files do not change.
@cache
def role_defaults(role: str, roles: Path = ROLES) -> dict:
    path = roles / role / "defaults" / "main.yml"
    if "/" in role or not path.is_file():
        raise AnsibleLookupError(f"role_default: this collection has no role {role!r}")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def literal_default(defaults: dict, role: str, name: str):
    if name not in defaults:
        raise AnsibleLookupError(f"role_default: role {role} defines no default for {name}")
    value = deepcopy(defaults[name])
    if "{{" in yaml.safe_dump(value) or "{%" in yaml.safe_dump(value):
        raise AnsibleLookupError(
            f"role_default: the default of {name} in role {role} is templated "
            f"({value!r}); only literal defaults can be read from another role"
        )
    return value


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        role = self.get_option("role")
        defaults = role_defaults(role)
        return [literal_default(defaults, role, name) for name in terms]

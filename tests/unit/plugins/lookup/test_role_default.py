from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleLookupError
from ansible_collections.fastapi_ops.stack.plugins.lookup.role_default import (
    ROLES,
    literal_default,
    role_defaults,
)

ROOT = Path(__file__).resolve().parents[4]


def test_reads_the_roles_own_defaults_file():
    assert ROLES.resolve() == (ROOT / "roles").resolve()
    defaults = role_defaults("app")
    assert defaults == yaml.safe_load((ROOT / "roles/app/defaults/main.yml").read_text())
    assert literal_default(defaults, "app", "app_port") == defaults["app_port"]
    assert isinstance(literal_default(defaults, "app", "app_port"), int)


def test_unknown_role_and_variable_are_refused():
    with pytest.raises(AnsibleLookupError, match="no role 'nope'"):
        role_defaults("nope")
    with pytest.raises(AnsibleLookupError, match="no role '../app'"):
        role_defaults("../app")
    with pytest.raises(AnsibleLookupError, match="role app defines no default for app_nope"):
        literal_default(role_defaults("app"), "app", "app_nope")


def test_a_templated_default_is_refused():
    defaults = role_defaults("app")
    assert "{{" in defaults["app_root"]
    with pytest.raises(AnsibleLookupError, match="default of app_root in role app is templated"):
        literal_default(defaults, "app", "app_root")
    with pytest.raises(AnsibleLookupError, match="templated"):
        literal_default({"x": ["a", {"b": "{% if 1 %}c{% endif %}"}]}, "r", "x")


def test_through_ansible():
    """The lookup as a playbook calls it, from the collection path of the checkout."""
    out = subprocess.run(
        [
            "ansible",
            "localhost",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ lookup('fastapi_ops.stack.role_default', 'app_port', 'app_health_path',"
            " role='app') | to_json }}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    defaults = role_defaults("app")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.dumps([defaults["app_port"], defaults["app_health_path"]]) in out.stdout, out.stdout

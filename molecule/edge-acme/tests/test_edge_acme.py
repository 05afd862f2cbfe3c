"""edge-acme: nginx_tls_mode=acme against pebble (HTTP-01 through the lb's Nginx)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import testinfra

SCENARIO = Path(__file__).resolve().parent.parent
PROJECT = SCENARIO.parent.parent
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
NAME = "edge.acme.test"


@pytest.fixture(scope="module")
def lb():
    return testinfra.get_host("ansible://edge-acme-lb", ansible_inventory=INVENTORY)


@pytest.fixture(scope="module")
def ca():
    return testinfra.get_host("ansible://edge-acme-ca", ansible_inventory=INVENTORY)


def served_cert(ca) -> str:
    """The certificate the lb serves for NAME, seen from the CA machine (another machine)."""
    return ca.check_output(
        f"echo | openssl s_client -connect {NAME}:443 -servername {NAME} 2>/dev/null"
        " | openssl x509 -noout -issuer -subject -serial"
    )


def test_served_certificate_comes_from_pebble(ca):
    out = served_cert(ca)
    assert "issuer=CN = Pebble Intermediate CA" in out
    assert f"subject=CN = {NAME}" in out


def test_chain_verifies_against_pebble_root(ca):
    # Pebble's issuing root is only published on its management port.
    ca.check_output("curl -sk https://127.0.0.1:15000/roots/0 -o /tmp/pebble-root.pem")
    out = ca.run(
        f"curl -s --cacert /tmp/pebble-root.pem -o /dev/null -w '%{{http_code}}' https://{NAME}/static/none"
    )
    assert out.rc == 0, out.stderr  # TLS verification with the full chain succeeded
    assert out.stdout == "404"  # answered by Nginx itself (a static location)


def test_key_and_account_key_private(lb):
    for path in ("/etc/nginx/tls/server.key", "/etc/nginx/tls/acme-account.key"):
        f = lb.file(path)
        assert f.mode == 0o600 and f.user == "root", path


def test_challenge_files_cleaned_up(lb):
    assert not lb.file("/var/www/acme-challenge/.well-known").exists


def test_live_config_points_at_acme_certificate(lb):
    site = lb.file("/etc/nginx/fastapi_ops/site.conf").content_string
    assert "ssl_certificate /etc/nginx/tls/acme/fullchain.pem;" in site


def _play(*extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(SCENARIO / "renew.yml"), *extra],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


def test_renewal_when_due_then_idempotent(ca):
    before = served_cert(ca)
    # Pebble's certificates live ~5 years: 4000 remaining days makes the current one due.
    res = _play("-e", "edge_remaining_days=4000")
    assert res.returncode == 0, res.stdout[-3000:]
    after = served_cert(ca)
    assert "Pebble Intermediate CA" in after
    assert after.split("serial=")[1] != before.split("serial=")[1], (before, after)
    # Not due any more: nothing changes.
    res = _play()
    assert res.returncode == 0, res.stdout[-3000:]
    assert "changed=0" in res.stdout.split("PLAY RECAP")[1], res.stdout[-2000:]

"""A single Redis converged in plain text (redis_tls: false, as before TLS came) moved to
TLS under load through Nginx, as roles/redis/README.md says: a run with redis_plaintext
(Redis takes 6380 beside 6379 at run time, the app reloads onto rediss://), then one
without it (6379 closes at run time), then a third that renews the server certificate
(Redis loads it at run time). Reads, creations and locked updates, never retried: none may
fail, and Redis must not restart (its data and connections stay).

Runs before test_backup.py (file order); the restores there then run on TLS."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import testinfra

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tools.api_token import auth_headers, token_for  # noqa: E402
from tools.loadgen import DRILL_RATE, Load, Target, new_product  # noqa: E402
from tools.playbook import run_playbook  # noqa: E402

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
PLAYBOOK = Path(__file__).with_name("redis_tls.yml")
# The second run: the app has nothing left to change, the Redis play alone.
REDIS_PLAY = Path(__file__).with_name("redis.yml")
testinfra_hosts = ["backup-db"]
DB = testinfra.get_host(f"ansible://backup-db?ansible_inventory={INVENTORY}")
ADDRESS = DB.backend.get_variables()["ansible_host"]
EDGE = f"https://{ADDRESS}"
HOST = {"Host": "backup-db"}
ENV_FILE = "/etc/fastapi-ops-app/fastapi-ops-app.env"


def redis_url() -> str:
    return DB.check_output("grep ^REDIS_URL= %s", ENV_FILE).split("=", 1)[1].strip('"')


def listening(port: int) -> bool:
    return DB.run("ss -Htln 'sport = :%s' | grep -q .", str(port)).rc == 0


def redis_invocation() -> str:
    return DB.check_output("systemctl show -p InvocationID --value redis-server")


def served_serial() -> str:
    """The serial of the certificate Redis serves to a new connection."""
    return DB.check_output(
        "openssl s_client -connect 127.0.0.1:6380 -CAfile /etc/redis/tls/ca.crt </dev/null"
        " 2>/dev/null | openssl x509 -noout -serial"
    )


def file_serial() -> str:
    return DB.check_output("openssl x509 -noout -serial -in /etc/redis/tls/server.crt")


def test_a_plain_text_redis_moves_to_tls_under_load_without_a_failed_request():
    assert redis_url().startswith("redis://") and listening(6379) and not listening(6380)
    invocation = redis_invocation()
    headers = auth_headers(token_for(INVENTORY, "redis-tls-move", ttl=3600))
    with httpx.Client(verify=False, timeout=10) as client:  # self-signed lab certificate
        created = client.post(f"{EDGE}/api/v1/products", json=new_product(), headers=HOST | headers)
        assert created.status_code == 201, created.text
    pid = created.json()["id"]
    stock = iter(range(10**9))
    load = Load(
        [
            # An Authorization header bypasses Nginx's cache: the app reads through Redis.
            Target(f"{EDGE}/api/v1/products/{pid}", headers=HOST | {"Authorization": "Bearer x"}),
            Target(f"{EDGE}/api/v1/products", "POST", new_product, headers=HOST | headers),
            # An update takes the Redis lock: it fails if Redis is away.
            Target(
                f"{EDGE}/api/v1/products/{pid}",
                "PATCH",
                lambda: {"stock": next(stock)},
                headers=HOST | headers,
                name="locked update",
            ),
        ],
        connections=4,
        duration=900,
        rate=DRILL_RATE,
    )

    def move():
        both = run_playbook(
            PLAYBOOK, INVENTORY, "-e", '{"redis_tls": true, "redis_plaintext": true}'
        )
        if both.returncode != 0:
            return both, "", False, ""
        moved = (redis_url(), listening(6379) and listening(6380))
        tls_only = run_playbook(REDIS_PLAY, INVENTORY, "-e", '{"redis_tls": true}')
        if tls_only.returncode != 0:
            return tls_only, *moved, ""
        # Fewer days left than redis_tls_renew_days: the certificate is signed again.
        served = served_serial()
        renew = '{"redis_tls": true, "redis_tls_valid_days": 4000, "redis_tls_renew_days": 3700}'
        return run_playbook(REDIS_PLAY, INVENTORY, "-e", renew), *moved, served

    (run, moved, both_open, served_before), seconds = load.around(move)
    r = load.result.summary()
    print(
        f"\nplain-text Redis moved to TLS by two runs, then its certificate renewed, under load:"
        f" sent={r['sent']}"
        f" failed={r['failed']} in {seconds:.1f} s (connection errors"
        f" {r['connection_errors']}, statuses {r['statuses']}; locked updates"
        f" {load.by_target['locked update'].summary()['statuses']})"
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert moved.startswith("rediss://") and "ssl_ca_certs=" in moved and both_open
    assert not listening(6379) and listening(6380)
    # The renewed certificate is served, and the one before it was another.
    assert served_serial() == file_serial() != served_before
    assert redis_invocation() == invocation  # no restart: CONFIG SET at run time
    assert r["failed"] == 0 and r["connection_errors"] == 0, r
    with httpx.Client(verify=False, timeout=10) as client:
        ready = client.get(f"{EDGE}/health/ready", headers=HOST)
    assert ready.status_code == 200, ready.text

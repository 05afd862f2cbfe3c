"""Scenario patroni: pg1-pg3 run PostgreSQL under Patroni (synchronous mode) with a
3-member etcd over TLS; pgedge runs the cache, the app, Nginx and Prometheus.

Proven here, with figures printed for the issue note: Redis as built (a master, two
replicas, three Sentinels, the default user refused, closed to other hosts), a Sentinel
stopped and kill -9 of the Redis master under load; a planned switchover; then the move of
the cluster, built in plaintext as a release before TLS between hosts did (converge.yml),
to TLS by a run of site.yml on the db hosts under load, which leaves the Redis master and
the lead where the drills put them; the PostgreSQL cluster as built (one leader, a
synchronous and an asynchronous replica, checksums, the same settings everywhere, etcd's
TLS, the REST API's password and firewall, the app's URL naming every host, Prometheus
scraping every member and finding the metrics of the alert rules); then, under mixed load
through Nginx and numbered writes that must all survive, kill -9 of the primary's
postmaster, the primary's whole machine frozen (the old primary rejoins as a replica by
itself when it thaws), backups and archiving going on from the new leader, a replica
copied again from the leader, and site.yml's PostgreSQL play changing nothing but a
postmaster setting, rolled through the cluster.

The tests run in file order and share the machines."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import testinfra
import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))  # tools.*

from tools import dashboards  # noqa: E402
from tools.api_token import auth_headers, token_for  # noqa: E402
from tools.lab import lab  # noqa: E402
from tools.loadgen import DRILL_RATE, Load, Target, new_product  # noqa: E402
from tools.playbook import changed_tasks, run_playbook  # noqa: E402

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
HERE = Path(__file__).parent
DB_HOSTS = ["pg1", "pg2", "pg3"]
REST_PORT = 8008
CONNECTIONS = 16
# The writes' token outlives the scenario (CI gives it 60 minutes).
WRITE_TOKEN_TTL = 4 * 3600
REPORT = ROOT / ".cache" / "patroni-drills.json"

# The tests drive every machine themselves; run them once.
testinfra_hosts = ["pgedge"]


def machine(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def address(name: str) -> str:
    return machine(name).backend.get_variables()["ansible_host"]


LB_URL = f"https://{address('pgedge')}"


def record(name: str, **figures) -> None:
    """Keep the figures for the issue note, and print them."""
    REPORT.parent.mkdir(exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[name] = figures
    REPORT.write_text(json.dumps(data, indent=2))
    print(f"\n{name}: {json.dumps(figures)}")


def members(timeout: float = 60, skip: str | None = None) -> list[dict]:
    """Patroni's view of the cluster, asked on the first member that answers (the REST
    API is open to the db hosts only); `skip`: a frozen machine (SSH would hang)."""
    deadline = time.monotonic() + timeout
    while True:
        for name in (h for h in DB_HOSTS if h != skip):
            out = machine(name).run(
                "curl -sS --max-time 3 http://%s:%s/cluster", address(name), str(REST_PORT)
            )
            if out.rc == 0:
                return json.loads(out.stdout)["members"]
        if time.monotonic() > deadline:
            raise AssertionError("no Patroni member answers")
        time.sleep(1)


def wait_cluster(leader_not: str | None = None, timeout: float = 120) -> list[dict]:
    """Until one running leader (other than `leader_not`) and two running replicas."""
    deadline = time.monotonic() + timeout
    while True:
        now = members()
        leaders = [m for m in now if m["role"] == "leader" and m["state"] == "running"]
        replicas = [m for m in now if m["role"] != "leader" and m["state"] == "streaming"]
        if (
            len(leaders) == 1
            and leaders[0]["name"] != leader_not
            and len(replicas) == 2
            and all(m.get("lag", 0) == 0 for m in replicas)
        ):
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster not back: {now}")
        time.sleep(1)


def leader(now: list[dict] | None = None) -> str | None:
    return next((m["name"] for m in now or members() if m["role"] == "leader"), None)


def psql(host: str, sql: str, db: str = "app") -> str:
    return machine(host).check_output(
        "cd / && runuser -u postgres -- psql -AtXq -v ON_ERROR_STOP=1 -d %s -c %s", db, sql
    )


@functools.cache
def write_headers() -> dict[str, str]:
    """The headers of every write (a products:write token), minted once, on the app host."""
    return auth_headers(token_for(INVENTORY, "patroni-drills", ttl=WRITE_TOKEN_TTL))


@pytest.fixture(scope="module")
def product_id() -> int:
    with httpx.Client(verify=False, timeout=10) as client:
        resp = client.post(f"{LB_URL}/api/v1/products", json=new_product(), headers=write_headers())
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]


def mixed_targets(product_id: int) -> list[Target]:
    """Uncached reads (an Authorization header bypasses Nginx's cache; the app ignores it
    on reads), cacheable reads, a cheap route and writes (with the token)."""
    return [
        Target(
            f"{LB_URL}/api/v1/products/{product_id}",
            headers={"Authorization": "Bearer drill"},
            name="read",
        ),
        Target(f"{LB_URL}/api/v1/products?page=1", name="cached read"),
        Target(f"{LB_URL}/version", name="version"),
        Target(
            f"{LB_URL}/api/v1/products",
            "POST",
            new_product,
            headers=write_headers(),
            name="write",
        ),
    ]


class NumberedWrites:
    """Writes numbered rows one after the other, never retrying, and keeps the numbers the
    server acknowledged (201) with their times: every one must be there afterwards."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:8]
        self.acked: list[int] = []
        self.failed: list[tuple[float, str]] = []
        self.ok_times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    ok_status = 201

    def send(self, client: httpx.Client, n: int) -> httpx.Response:
        body = {"sku": f"seq-{self.run}-{n}", "name": "Seq", "price": "1.00", "category": "seq"}
        return client.post(f"{LB_URL}/api/v1/products", json=body, headers=write_headers())

    def _loop(self) -> None:
        with httpx.Client(verify=False, timeout=10) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    resp = self.send(client, n)
                    if resp.status_code == self.ok_status:
                        self.acked.append(n)
                        self.ok_times.append(time.time())
                    else:
                        self.failed.append((time.time(), str(resp.status_code)))
                        time.sleep(0.05)
                except httpx.HTTPError as exc:
                    self.failed.append((time.time(), type(exc).__name__))

    def __enter__(self) -> NumberedWrites:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def until_resumed(self, t0: float, timeout: float = 90) -> float:
        """Wait (after a fault at t0) until a write succeeds after the last failed one
        and 3 s have passed without a failure; returns t0."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last_bad = max((t for t, _why in self.failed if t >= t0), default=t0)
            if time.time() - last_bad > 3 and any(t > last_bad for t in self.ok_times):
                break
            time.sleep(0.5)
        return t0

    def resumed_after(self, t0: float) -> float:
        """Seconds from t0 to the first acknowledged write after the last failed one."""
        last_bad = max((t for t, _why in self.failed if t >= t0), default=t0)
        first_ok = min((t for t in self.ok_times if t >= last_bad), default=None)
        return round(first_ok - t0, 1) if first_ok else float("inf")

    def missing(self, host: str) -> list[int]:
        rows = psql(host, f"SELECT sku FROM products WHERE sku LIKE 'seq-{self.run}-%'")
        there = {int(s.rsplit("-", 1)[1]) for s in rows.split()}
        return sorted(set(self.acked) - there)


class LockedUpdates(NumberedWrites):
    """PATCHes of one product one after the other: each takes the product's lock in Redis
    (a 503 while the app cannot), so the first 200 after the last failure is the app back
    on the Redis master."""

    ok_status = 200

    def __init__(self, product_id: int) -> None:
        super().__init__()
        self.url = f"{LB_URL}/api/v1/products/{product_id}"

    def send(self, client: httpx.Client, n: int) -> httpx.Response:
        return client.patch(self.url, json={"name": f"Update {n}"}, headers=write_headers())

    def figures(self, t0: float) -> dict:
        # The app is back on Redis once it stops answering 503. The first 200 may come
        # later: a PATCH the kill caught holding the lock could not release it, and the
        # new master has that lock (a replica acknowledged it) until it expires
        # (LOCK_TIMEOUT, 10 s); until then the next PATCH waits for it, or gets 409.
        last_503 = max((t for t, why in self.failed if t >= t0 and why == "503"), default=t0)
        return {
            "updates_sent": len(self.acked) + len(self.failed),
            "updates_failed": dict(Counter(why for _t, why in self.failed)),
            "back_on_redis_after_s": round(last_503 - t0, 1),
            "first_update_after_s": self.resumed_after(t0),
        }


def drill(name: str, product_id: int, action, frozen: str | None = None):
    """Mixed load and numbered writes around `action()` (which returns the time the fault
    began): prints and returns the figures. With `frozen` (a member still frozen), the
    cluster is read from the other members, without waiting for all three."""
    # The clients wait up to 30 s, as a browser would (Nginx itself gives the app 60 s):
    # with the primary frozen, a request the app sends to it waits for the driver's
    # command timeout first. The slowest answer of each target is printed.
    load = Load(
        mixed_targets(product_id),
        connections=CONNECTIONS,
        duration=600,
        timeout=30,
        rate=DRILL_RATE,
    )
    with NumberedWrites() as writes:
        outcome, wall = load.around(lambda: writes.until_resumed(action()), settle=3)
    now = [m for m in members(skip=frozen) if m["name"] != frozen] if frozen else wait_cluster()
    figures = {
        "wall_s": round(wall, 1),
        "sent": load.result.sent,
        "failed": load.result.bad,
        "per_target": {
            k: {**v.summary()["statuses"], **v.errors} for k, v in load.by_target.items()
        },
        "slowest_s": {
            k: round(max(v.latencies_ms, default=0) / 1000, 1) for k, v in load.by_target.items()
        },
        "errors": dict(load.result.errors),
        "numbered_sent": len(writes.acked) + len(writes.failed),
        "numbered_acked": len(writes.acked),
        "numbered_failed": len(writes.failed),
        "writes_resumed_after_s": writes.resumed_after(outcome),
        "missing_acked": writes.missing(leader(now)),
        "leader_after": leader(now),
    }
    record(name, **figures)
    # A write the cluster cannot take yet is the app's 503 (Retry-After), never a 500.
    assert set(load.by_target["write"].statuses) <= {201, 503}, figures
    return load, writes, figures


def read_failures(load: Load) -> int:
    return sum(load.by_target[n].bad for n in ("read", "cached read", "version"))


# --- Redis under Sentinel -------------------------------------------------------------------

CACHE_HOSTS = SENTINEL_HOSTS = DB_HOSTS
SERVICE = "fastapi-ops"
# TLS only (redis_tls): data nodes on 6380, Sentinels on 26380, checked against the Redis CA.
TLS = "--tls --cacert /etc/redis/tls/ca.crt"


def secret(name: str) -> str:
    return machine("pg1").backend.get_variables()[name]


def sentinel(host: str, *args: str, user: str = "sentinel", timeout: float = 3):
    """A command to the Sentinel of `host`, sent from that machine."""
    password = secret("redis_sentinel_password" if user == "sentinel" else "redis_app_password")
    return machine(host).run(
        f"REDISCLI_AUTH=%s timeout %s redis-cli -e {TLS} -p 26380 --user %s " + " ".join(args),
        password,
        str(timeout),
        user,
    )


def redis_master(skip: str | None = None) -> str:
    """The master's machine, as the first Sentinel that answers names it."""
    names = {address(h): h for h in CACHE_HOSTS}
    for host in (h for h in SENTINEL_HOSTS if h != skip):
        out = sentinel(host, "SENTINEL", "get-master-addr-by-name", SERVICE)
        if out.rc == 0 and out.stdout.strip():
            return names[out.stdout.split()[0]]
    raise AssertionError("no Sentinel names a master")


def redis_role(host: str) -> list[str]:
    """ROLE of the data node, asked as the role's own user (its password stays on the host)."""
    return (
        machine(host)
        .check_output(
            f"REDISCLI_AUTH=$(cat /etc/redis/admin.password) redis-cli -e {TLS} -p 6380"
            " --user fastapi-ops ROLE"
        )
        .split()
    )


def sentinel_view(host: str) -> dict[str, str]:
    lines = sentinel(host, "SENTINEL", "MASTER", SERVICE).stdout.split()
    return dict(zip(lines[::2], lines[1::2], strict=False))


def wait_replica_of(host: str, master: str, timeout: float = 90) -> float:
    """Seconds until `host` replicates from `master` with its link up."""
    t0 = time.monotonic()
    while True:
        try:
            role = redis_role(host)
        except AssertionError:
            role = []
        if role[:3] == ["slave", address(master), "6380"] and "connected" in role:
            return round(time.monotonic() - t0, 1)
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{host} is not a replica of {master}: {role}")
        time.sleep(1)


def test_redis_master_replica_and_three_sentinels():
    """As built: pg1 is the master (the first cache host, on the first run), pg2 and pg3
    its replicas; each Sentinel sees the master, two replicas and two other Sentinels,
    quorum 2."""
    assert redis_master() == "pg1"
    for host in ("pg2", "pg3"):
        wait_replica_of(host, "pg1", timeout=30)
    for host in SENTINEL_HOSTS:
        view = sentinel_view(host)
        assert view["flags"] == "master", (host, view)
        assert (view["num-slaves"], view["num-other-sentinels"], view["quorum"]) == ("2", "2", "2")
    env = machine("pgedge").check_output("cat /etc/fastapi-ops-app/fastapi-ops-app.env")
    sentinels = re.search(r'^REDIS_SENTINELS="(.*)"$', env, re.M).group(1)
    assert sentinels == ",".join(f"{address(h)}:26380" for h in SENTINEL_HOSTS), sentinels
    assert re.search(r'^REDIS_LOCK_REPLICAS="1"$', env, re.M), env
    assert re.search(r'^REDIS_URL="rediss://.*ssl_ca_certs=', env, re.M), "REDIS_URL is not TLS"


def test_redis_and_sentinel_refuse_the_default_user_and_keep_the_app_to_its_commands():
    for port in (6380, 26380):  # from pg3, a cache host: both are open to it
        out = machine("pg3").run(f"redis-cli {TLS} -h %s -p %s PING", address("pg1"), str(port))
        assert "NOAUTH" in out.stdout + out.stderr, (port, out.stdout, out.stderr)
        # Plain text gets no answer: the TLS port drops it, the plain-text ports are closed.
        out = machine("pg3").run("timeout 3 redis-cli -h %s -p %s PING", address("pg1"), str(port))
        assert "NOAUTH" not in out.stdout + out.stderr and "PONG" not in out.stdout, (port, out)
    for port in (6379, 26379):  # closed: nothing listens, the firewall drops the SYN
        out = machine("pg3").run("timeout 3 redis-cli -h %s -p %s PING", address("pg1"), str(port))
        assert out.rc != 0 and "PONG" not in out.stdout, (port, out)
    # The app may ask where the master is, not move it.
    out = sentinel("pg3", "SENTINEL", "FAILOVER", SERVICE, user="app")
    assert out.rc != 0 and "NOPERM" in out.stdout + out.stderr, out
    # The users live in the aclfile: a CONFIG REWRITE never copies them into redis.conf.
    for host in CACHE_HOSTS:
        conf = machine(host).check_output("cat /etc/redis/redis.conf")
        assert conf.startswith("# Written once by fastapi_ops.stack.redis"), conf[:200]
        assert not re.search(r"^user ", conf, re.M), host


def test_redis_and_sentinel_are_closed_to_other_hosts():
    # The controller is neither an app, a cache nor a monitoring host: dropped.
    for port in (6380, 26380):
        with pytest.raises(httpx.ConnectTimeout):
            httpx.get(f"http://{address('pg1')}:{port}/", timeout=2)


def test_stopping_one_sentinel_fails_no_request(product_id):
    """The first Sentinel of the app's list stopped for 10 s under load; started again,
    it finds its peers."""

    stopped = {}

    def stop():
        t0 = stopped["t0"] = time.time()
        machine("pg1").check_output("systemctl stop redis-sentinel")
        time.sleep(10)
        return t0

    try:
        with LockedUpdates(product_id) as updates:
            load, writes, fig = drill("redis_sentinel_stopped", product_id, stop)
    finally:
        machine("pg1").check_output("systemctl start redis-sentinel")
    record("redis_sentinel_stopped_updates", **updates.figures(stopped["t0"]))
    assert fig["failed"] == 0 and fig["numbered_failed"] == 0, fig
    assert updates.acked and not updates.failed, updates.failed
    deadline = time.monotonic() + 30
    while sentinel_view("pg1").get("num-other-sentinels") != "2":
        assert time.monotonic() < deadline, sentinel_view("pg1")
        time.sleep(1)


def test_kill_9_of_the_redis_master(product_id):
    """kill -9 of redis-server on the master: Sentinel promotes a replica, the app's
    writes (a lock in Redis, acknowledged by a replica) come back on it, no read fails;
    the old master, restarted by systemd after RestartSec, rejoins as a replica."""
    old = redis_master()
    promoted = {}

    def kill():
        t0 = promoted["t0"] = time.time()
        machine(old).check_output("kill -9 $(systemctl show -p MainPID --value redis-server)")
        while redis_master(skip=old) == old:
            assert time.time() - t0 < 60, "no promotion"
            time.sleep(0.2)
        promoted["s"] = round(time.time() - t0, 1)
        updates.until_resumed(t0)
        return t0

    with LockedUpdates(product_id) as updates:
        load, writes, fig = drill("redis_kill_9_master", product_id, kill)
    new = redis_master()
    rejoined = wait_replica_of(old, new)
    back = updates.figures(promoted["t0"])
    record(
        "redis_failover",
        old=old,
        new=new,
        promoted_after_s=promoted["s"],
        rejoined_s=rejoined,
        **back,
    )
    assert read_failures(load) == 0, fig
    assert set(back["updates_failed"]) <= {"503", "409"}, back
    assert back["back_on_redis_after_s"] <= 10, back
    assert back["first_update_after_s"] <= 10 + 10, back  # + the lock a kill left behind
    assert fig["missing_acked"] == [], fig
    for host in CACHE_HOSTS:
        if host != new:
            wait_replica_of(host, new)


# --- A planned switchover: the lead moves before the move to TLS ---------------------------


def test_planned_switchover_fails_no_read(product_id):
    before = leader(wait_cluster())

    def switchover():
        t0 = time.time()
        run = run_playbook("pg_switchover.yml", INVENTORY)
        assert run.returncode == 0, run.stdout[-3000:]
        return t0

    load, writes, fig = drill("switchover", product_id, switchover)
    assert fig["leader_after"] != before
    assert read_failures(load) == 0, fig
    assert fig["missing_acked"] == [], fig
    # At most the writes in flight when the old primary stopped: one per connection.
    assert load.by_target["write"].bad <= CONNECTIONS // 4 + 1, fig


# --- From plaintext to verified TLS ------------------------------------------------------

APP_PYTHON = "/srv/fastapi-ops-app/current/venv/bin/python"
# One connection as the app's role from the app host, with TLS as asked (asyncpg's ssl).
CONNECT = (
    "import asyncio, os, sys, asyncpg\n"
    "async def main():\n"
    "    c = await asyncpg.connect(host=sys.argv[1], user='app', database='app', ssl=sys.argv[2],\n"
    "                              password=os.environ['DB_PASSWORD'], timeout=5)\n"
    "    print(await c.fetchval('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'))\n"
    "asyncio.run(main())\n"
)


def over_tls(host: str, who: str) -> list[str]:
    """pg_stat_ssl's `ssl` of the leader's sessions: the app's, or the replicas' streams."""
    join = (
        "pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'app'"
        if who == "app"
        else "pg_stat_replication r JOIN pg_stat_ssl s USING (pid)"
    )
    return psql(host, f"SELECT s.ssl FROM {join}", db="postgres").split()


def test_a_plaintext_cluster_moves_to_tls_without_a_failed_request(product_id):
    """converge.yml built the cluster as a release before TLS did: the app and the replicas
    in plaintext. site.yml with its defaults on the db hosts, under the mixed load: the CA
    and each member's certificate, then the TLS settings with hostssl in one reload per
    member (Patroni's local configuration), while the app still connects as it did (the
    driver's prefer, which asks for TLS first): no failed request. It runs where the drills
    above left the Redis master and the lead, and keeps both there. (The app hosts' own
    step, verify-full, is a reload of their configuration, as in the cluster scenario's
    drills; left out here for CI time.)"""
    lead = leader(wait_cluster())
    redis_before = redis_master()
    assert set(over_tls(lead, "app")) == {"f"}
    assert over_tls(lead, "replication") == ["f", "f"]

    changed = {}

    def migrate():
        t0 = time.time()
        run = run_playbook("site.yml", INVENTORY, "--limit", "db")
        assert run.returncode == 0, run.stdout[-3000:]
        changed.update(changed_tasks(run.stdout))
        return t0

    load, writes, fig = drill("tls_migration", product_id, migrate)
    print("changed:", json.dumps({task: sorted(hosts) for task, hosts in changed.items()}))
    # Only the TLS material and PostgreSQL's use of it: the other roles of the db hosts
    # (etcd, Redis and its Sentinels, pgBackRest, the base) find nothing to do.
    roles = ("fastapi_ops.stack.shared : ", "fastapi_ops.stack.postgresql : ")
    roles += ("fastapi_ops.stack.patroni : ",)
    assert all(task.startswith(roles) for task in changed), changed
    assert fig["failed"] == 0 and fig["numbered_failed"] == 0, fig
    assert fig["missing_acked"] == [], fig
    assert fig["leader_after"] == lead, fig
    assert redis_master() == redis_before
    deadline = time.monotonic() + 30  # the replicas' WAL receivers reconnect with sslmode
    while over_tls(lead, "replication") != ["t", "t"] and time.monotonic() < deadline:
        time.sleep(1)
    assert over_tls(lead, "replication") == ["t", "t"]
    # New connections: plaintext is refused, even with the app's password; the driver's
    # default (prefer, the app's) gets TLS; the CA's certificate for the leader's address
    # passes verify-full. (pg_hba is read at connect: the app's open plaintext sessions
    # last until its pool replaces them, or its own step reloads it.)
    pgedge = machine("pgedge")
    ca = machine(DB_HOSTS[0]).check_output("cat /etc/postgresql/tls/ca.crt")
    pgedge.check_output("echo %s > /tmp/postgresql-ca.crt", ca)
    for ssl, expected in (
        ("disable", "no encryption"),
        ("prefer", "True"),
        ("verify-full", "True"),
    ):
        out = pgedge.run(
            "cd / && DB_PASSWORD=%s PGSSLROOTCERT=/tmp/postgresql-ca.crt %s -c %s %s %s",
            secret("postgresql_app_password"),
            APP_PYTHON,
            CONNECT,
            address(lead),
            ssl,
        )
        assert expected in out.stdout + out.stderr, (ssl, out.stdout, out.stderr)


# --- The cluster as built ---------------------------------------------------------------


def test_one_leader_one_synchronous_and_one_asynchronous_replica():
    now = wait_cluster()
    roles = sorted(m["role"] for m in now)
    assert roles == ["leader", "replica", "sync_standby"], now
    assert {m["name"] for m in now} == set(DB_HOSTS)


def test_every_member_has_checksums_and_the_same_settings():
    wanted = None
    for host in DB_HOSTS:
        got = psql(
            host,
            "SELECT current_setting('data_checksums'), current_setting('max_connections'),"
            " current_setting('shared_buffers'), current_setting('password_encryption')",
            db="postgres",
        )
        assert got.startswith("on|"), (host, got)
        assert got.endswith("|scram-sha-256"), (host, got)
        wanted = wanted or got
        assert got == wanted, (host, got, wanted)


def test_no_trust_and_replication_only_from_members():
    hba = machine("pg1").check_output("cat /var/lib/postgresql/15/main/pg_hba.conf")
    rules = [line for line in hba.splitlines() if line and not line.startswith("#")]
    assert not any(" trust" in line for line in rules), rules
    peers = {f"{address(h)}/32" for h in DB_HOSTS}
    replication = {line.split()[3] for line in rules if line.split()[1] == "replication"}
    replication.discard("127.0.0.1/32")  # Patroni's own check
    assert replication == peers, rules


def test_rest_api_unsafe_calls_need_the_password():
    pg1 = machine("pg1")
    url = f"http://{address('pg1')}:{REST_PORT}/restart"
    anonymous = pg1.run("curl -s -o /dev/null -w '%%{http_code}' -X POST %s -d {}", url)
    assert anonymous.stdout == "401", anonymous.stdout
    wrong = pg1.run("curl -s -o /dev/null -w '%%{http_code}' -u patroni:wrong -X POST %s", url)
    assert wrong.stdout == "401", wrong.stdout


def test_rest_api_and_etcd_are_closed_to_other_hosts():
    # The controller is neither a db nor a monitoring host: dropped, not refused.
    for port in (REST_PORT, 2379, 2380):
        with pytest.raises(httpx.ConnectTimeout):
            httpx.get(f"http://{address('pg2')}:{port}/", timeout=2)


def test_etcd_has_three_healthy_members_over_tls_and_refuses_no_certificate():
    pg1 = machine("pg1")
    endpoints = ",".join(f"https://{address(h)}:2379" for h in DB_HOSTS)
    tls = " ".join(
        f"--{flag}=/etc/patroni/etcd/{name}"
        for flag, name in (("cacert", "ca.crt"), ("cert", "client.crt"), ("key", "client.key"))
    )
    health = pg1.run(f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} {tls} endpoint health")
    healthy = (health.stdout + health.stderr).count("is healthy")
    assert health.rc == 0 and healthy == 3, health
    anonymous = pg1.run(
        f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} --cacert=/etc/patroni/etcd/ca.crt"
        " --command-timeout=3s endpoint health"
    )
    assert anonymous.rc != 0, anonymous


def test_the_app_url_names_every_db_host():
    env = machine("pgedge").check_output("cat /etc/fastapi-ops-app/fastapi-ops-app.env")
    url = re.search(r"^DATABASE_URL=(.*)$", env, re.M).group(1)
    for host in DB_HOSTS:
        assert f"host={address(host)}:5432" in url, url
    assert "target_session_attrs=read-write" in url, url


def prometheus(path: str) -> dict:
    url = f"http://{address('pgedge')}:9090{path}"
    doc = json.loads(machine("pgedge").check_output(f"curl -sS --max-time 10 '{url}'"))
    assert doc["status"] == "success", doc
    return doc["data"]


def test_prometheus_scrapes_every_member_and_the_rules_find_their_metrics():
    """Patroni's and etcd's jobs have every db host up, and each metric name the patroni
    and etcd alert rules read is exported (stored, or declared by a target's scrape)."""
    deadline = time.monotonic() + 60  # the first scrapes after the converge
    while True:
        targets = prometheus("/api/v1/targets?state=active")["activeTargets"]
        ours = [t for t in targets if t["labels"]["job"] in ("patroni", "etcd")]
        up = sorted(
            (t["labels"]["job"], t["labels"]["instance"]) for t in ours if t["health"] == "up"
        )
        if len(up) == 6 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert up == sorted((job, host) for job in ("etcd", "patroni") for host in DB_HOSTS), ours
    live = set(prometheus("/api/v1/label/__name__/values"))
    for t in ours:
        scrape = machine("pgedge").check_output(f"curl -sS --max-time 10 '{t['scrapeUrl']}'")
        live |= set(re.findall(r"^# TYPE (\S+) ", scrape, re.M))
    rules = ROOT / "roles" / "prometheus" / "files" / "rules"
    for name in ("patroni.yml", "etcd.yml"):
        for group in yaml.safe_load((rules / name).read_text())["groups"]:
            for rule in group["rules"]:
                used = {n for n in dashboards.metric_names(rule["expr"]) if ":" not in n}
                assert used <= live, (rule.get("alert"), sorted(used - live))


# --- Failures under load, over TLS ---------------------------------------------------------


def test_kill_9_of_the_primary_postmaster(product_id):
    old = leader(wait_cluster())

    def kill():
        t0 = time.time()
        machine(old).check_output("kill -9 $(head -1 /var/lib/postgresql/15/main/postmaster.pid)")
        return t0

    load, writes, fig = drill("kill_9_postmaster", product_id, kill)
    assert fig["writes_resumed_after_s"] <= 30, fig
    assert read_failures(load) == 0, fig
    assert fig["missing_acked"] == [], fig


def test_primary_machine_frozen_then_rejoins_as_replica(product_id):
    """Every process of the primary's machine stopped (SIGSTOP): to the others it is a
    machine gone dark, with no TCP reset. Thawed, it must find itself demoted and follow
    the new leader by itself."""
    old = leader(wait_cluster())
    pids = machine_pids(old)

    def freeze():
        t0 = time.time()
        for pid in pids:
            try:
                os.kill(pid, 19)  # SIGSTOP
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until another member leads
            try:
                if leader(members(timeout=5, skip=old)) not in (None, old):
                    break
            except AssertionError:
                pass
            time.sleep(1)
        time.sleep(5)
        return t0

    try:
        load, writes, fig = drill("frozen_primary", product_id, freeze, frozen=old)
    finally:
        for pid in pids:
            try:
                os.kill(pid, 18)  # SIGCONT
            except ProcessLookupError:
                pass
    now = wait_cluster(timeout=180)
    roles = {m["name"]: m["role"] for m in now}
    record("frozen_primary_rejoined", old=old, roles=roles)
    assert roles[old] != "leader"
    assert fig["writes_resumed_after_s"] <= 30, fig
    assert read_failures(load) == 0, fig
    assert fig["missing_acked"] == [], fig


def pgbackrest(host: str, *args: str):
    return machine(host).run(
        "cd / && runuser -u postgres -- pgbackrest --stanza=main --log-level-console=warn "
        + " ".join(args)
    )


def test_backups_go_on_after_the_failovers():
    """pgBackRest across the lead's moves (the drills above made three): `pgbackrest check`
    passes on the current leader (it archives, on its own timeline) and on the repository
    host; a backup taken now copies the leader on that timeline."""
    now = leader(wait_cluster())
    timeline = int(psql(now, "SELECT timeline_id FROM pg_control_checkpoint()", db="postgres"))
    for host in (now, "pgedge"):
        t0 = time.monotonic()
        check = pgbackrest(host, "check")
        assert check.rc == 0, (host, check.stdout, check.stderr)
        record(
            f"pgbackrest_check_{'leader' if host == now else 'repository'}",
            host=host,
            seconds=round(time.monotonic() - t0, 1),
        )
    t0 = time.monotonic()
    backup = machine("pgedge").run("systemctl start pgbackrest-backup@diff.service")
    took = round(time.monotonic() - t0, 1)
    assert backup.rc == 0, backup.stderr
    info = json.loads(pgbackrest("pgedge", "--output=json", "info").stdout)[0]
    newest = info["backup"][-1]
    record(
        "backup_after_failovers",
        leader=now,
        timeline=timeline,
        seconds=took,
        backups=[(b["type"], b["archive"]["start"][:8]) for b in info["backup"]],
    )
    assert info["status"]["code"] == 0, info["status"]
    assert newest["type"] == "diff" and newest["timestamp"]["stop"] > time.time() - took - 60
    # A WAL file name starts with its timeline (8 hex digits).
    assert timeline > 1 and int(newest["archive"]["start"][:8], 16) == timeline, newest


def test_reinit_of_a_replica_fails_no_request(product_id):
    """pg_reinit.yml on the asynchronous replica: its data directory copied again from
    the leader while the load runs. The leader itself is refused, and left alone."""
    now = wait_cluster()
    lead = leader(now)
    started = psql(lead, "SELECT pg_postmaster_start_time()", db="postgres")
    refused = run_playbook("pg_reinit.yml", INVENTORY, "-e", f"patroni_reinit_member={lead}")
    assert refused.returncode != 0 and "No reinitialisation" in refused.stdout
    assert psql(lead, "SELECT pg_postmaster_start_time()", db="postgres") == started
    replica = next(m["name"] for m in now if m["role"] == "replica")
    before = psql(replica, "SELECT pg_postmaster_start_time()", db="postgres")

    def reinit():
        t0 = time.time()
        run = run_playbook("pg_reinit.yml", INVENTORY, "-e", f"patroni_reinit_member={replica}")
        assert run.returncode == 0, run.stdout[-3000:]
        record("reinit_playbook", member=replica, seconds=round(time.time() - t0, 1))
        return t0

    load, writes, fig = drill("reinit_replica", product_id, reinit)
    assert psql(replica, "SELECT pg_postmaster_start_time()", db="postgres") != before
    assert fig["leader_after"] == lead, fig
    assert fig["failed"] == 0 and fig["numbered_failed"] == 0, fig
    assert fig["missing_acked"] == [], fig


def machine_pids(name: str) -> list[int]:
    """The machine's systemd-nspawn process and everything under it."""
    root = lab.lab_processes()[name]
    todo, out = [root], []
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(lab.children(pid))
    return out


def test_a_postmaster_setting_rolls_through_after_the_failovers(product_id):
    """site.yml's PostgreSQL play (tests/postgresql.yml) on the db hosts, where the drills
    moved the lead three times, with a setting that needs a restart: Patroni's dynamic
    configuration is patched, the replicas restart one at a time, the lead moves by a
    switchover and the old leader restarts. Nothing else changes (every changed task is the
    postgresql or patroni role's) and no read fails. Last: the setting stays. (The rest of
    site.yml on the db hosts ran after the Redis failover and a switchover: the TLS drill.)"""
    before = leader(wait_cluster())
    setting = '{"postgresql_settings": {"max_locks_per_transaction": "96"}}'
    changed = {}

    def converge():
        t0 = time.time()
        run = run_playbook(HERE / "postgresql.yml", INVENTORY, "-e", setting)
        assert run.returncode == 0, run.stdout[-3000:]
        changed.update(changed_tasks(run.stdout))
        return t0

    load, writes, fig = drill("rolling_restart_setting", product_id, converge)
    print("changed:", json.dumps({task: sorted(hosts) for task, hosts in changed.items()}))
    for host in DB_HOSTS:
        assert psql(host, "SHOW max_locks_per_transaction", db="postgres") == "96", host
    assert not any(m.get("pending_restart") for m in members())
    assert fig["leader_after"] != before, fig
    assert read_failures(load) == 0, fig
    assert fig["missing_acked"] == [], fig
    roles = ("fastapi_ops.stack.patroni : ", "fastapi_ops.stack.postgresql : ")
    assert changed and all(task.startswith(roles) for task in changed), changed

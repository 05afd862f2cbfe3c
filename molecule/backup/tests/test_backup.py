"""Scenario backup: pgBackRest from backup-db (the stack but monitoring) to an encrypted
repository on backup-repo, over pgBackRest's TLS server.

Proven here, with figures: the converge's first full backup and `pgbackrest check` on both
hosts; a WAL segment in the repository within archive_timeout of a write; the repository
unreadable without the passphrase; hardened timers whose service really backs up; data
checksums; the figures in Prometheus; the restore check passing, then failing on a
corrupted backup file and firing its alert; the maintenance switch; a restore to a time
before the first backup refused with nothing changed; a point-in-time restore after a
DROP TABLE that brings the rows back, under load through Nginx (503 + Retry-After
meanwhile, never a 502), ending with /health/ready 200; a wiped data directory restored
under write load, losing at most archive_timeout of commits (the measured RPO); a
point-in-time restore onto a fresh machine (backup-spare).

The tests run in file order (the restores come last)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import testinfra
import yaml

SCENARIO = Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
sys.path.insert(0, str(ROOT))  # tools.loadgen

from tools.dashboards import metric_names  # noqa: E402
from tools.loadgen import Load, Target  # noqa: E402
from tools.playbook import run_playbook  # noqa: E402
from tools.systemd import start  # noqa: E402

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
GROUP_VARS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["provisioner"]["inventory"][
    "group_vars"
]["all"]
PGBR_DEFAULTS = yaml.safe_load((ROOT / "roles/pgbackrest/defaults/main.yml").read_text())
STANZA = PGBR_DEFAULTS["pgbackrest_stanza"]
REPO_PATH = PGBR_DEFAULTS["pgbackrest_repo_path"]
ARCHIVE_TIMEOUT = int(
    GROUP_VARS.get("pgbackrest_archive_timeout", PGBR_DEFAULTS["pgbackrest_archive_timeout"])
)
APP_SERVICE = "fastapi-ops-app"
ROWS = 1000

# These tests drive both machines themselves; run them once.
testinfra_hosts = ["backup-db"]


def machine(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


DB = machine("backup-db")
REPO = machine("backup-repo")
SPARE = machine("backup-spare")
DB_ADDRESS = DB.backend.get_variables()["ansible_host"]
REPO_ADDRESS = REPO.backend.get_variables()["ansible_host"]
TEXTFILE = "/var/lib/prometheus/node-exporter"


def psql(sql: str, db: str = "app", host=DB) -> str:
    return host.check_output(
        "cd / && runuser -u postgres -- psql -AtXq -v ON_ERROR_STOP=1 -d %s -c %s", db, sql
    ).strip()


def prometheus(expr: str) -> list:
    out = REPO.check_output(
        "curl -sS --max-time 10 %s",
        f"http://{REPO_ADDRESS}:9090/api/v1/query?query=" + quote(expr, safe=""),
    )
    return json.loads(out)["data"]["result"]


def wait_for(expr: str, timeout: float = 90) -> tuple[list, float]:
    """Poll a PromQL query until it returns a series: (result, seconds waited)."""
    started = time.monotonic()
    result: list = []
    while time.monotonic() - started < timeout:
        result = prometheus(expr)
        if result:
            break
        time.sleep(2)
    return result, time.monotonic() - started


def verify() -> tuple[object, float, str]:
    """Run the restore check by its service: (run, seconds, its metrics file)."""
    started = time.monotonic()
    run = REPO.run("systemctl start pgbackrest-verify.service")
    seconds = time.monotonic() - started
    prom = REPO.check_output("cat %s/pgbackrest_verify.prom", TEXTFILE)
    return run, seconds, prom


def sample(prom: str, name: str) -> float:
    return float(re.search(rf"^{name}{{[^}}]*}} (\S+)$", prom, re.M).group(1))


def pgbackrest(host, *args: str):
    return host.run(
        "cd / && runuser -u postgres -- pgbackrest --stanza=%s " + " ".join(["%s"] * len(args)),
        STANZA,
        *args,
    )


def info() -> dict:
    out = pgbackrest(REPO, "--output=json", "info")
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)[0]


def playbook(name: str, *args: str, inventory: str | Path = INVENTORY):
    """A playbook of the collection against the scenario's inventory, as a user runs it."""
    return run_playbook(name, inventory, *args, timeout=1800)


def ready_through_nginx(timeout: float = 60.0) -> tuple[int, float]:
    """Poll /health/ready through Nginx until 200: (last status, seconds waited)."""
    started = time.monotonic()
    status = 0
    with httpx.Client(verify=False, timeout=5) as client:  # status only, self-signed lab cert
        while time.monotonic() - started < timeout:
            try:
                status = client.get(
                    f"https://{DB_ADDRESS}/health/ready", headers={"Host": "backup-db"}
                ).status_code
            except httpx.HTTPError:
                status = 0
            if status == 200:
                break
            time.sleep(1)
    return status, time.monotonic() - started


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def test_converge_took_a_full_backup_and_check_passes():
    stanza = info()
    fulls = [b for b in stanza["backup"] if b["type"] == "full"]
    print(
        f"\nstanza {STANZA}: status {stanza['status']['message']}, backups "
        f"{[(b['label'], b['type'], b['info']['repository']['delta']) for b in stanza['backup']]}"
    )
    assert stanza["status"]["code"] == 0, stanza["status"]
    # One full backup: the converge's; molecule's second run of site.yml (idempotence,
    # changed=0) started none.
    assert len(fulls) == 1 and len(stanza["backup"]) == 1, stanza["backup"]
    for host in (DB, REPO):
        check = pgbackrest(host, "check")
        assert check.rc == 0, check.stdout + check.stderr


def test_a_write_is_archived_within_archive_timeout():
    segment = psql("SELECT pg_walfile_name(pg_current_wal_lsn())", db="postgres")
    psql(
        "CREATE TABLE IF NOT EXISTS archive_probe (at timestamptz);"
        " INSERT INTO archive_probe VALUES (now())",
        db="postgres",
    )
    started = time.monotonic()
    found = ""
    while time.monotonic() - started < ARCHIVE_TIMEOUT + 30:
        found = REPO.run(
            "find %s/archive/%s -name %s", REPO_PATH, STANZA, f"{segment}-*"
        ).stdout.strip()
        if found:
            break
        time.sleep(1)
    elapsed = time.monotonic() - started
    print(
        f"\nsegment {segment} in the repository after {elapsed:.1f} s"
        f" (archive_timeout {ARCHIVE_TIMEOUT} s)"
    )
    assert found, f"{segment} not archived within {elapsed:.0f} s"
    assert elapsed <= ARCHIVE_TIMEOUT + 15


def test_the_repository_is_encrypted():
    files = [
        f"{REPO_PATH}/backup/{STANZA}/backup.info",
        f"{REPO_PATH}/archive/{STANZA}/archive.info",
        REPO.check_output(
            "find %s/archive/%s -type f -name '0000*-*' | head -n1", REPO_PATH, STANZA
        ).strip(),
    ]
    for path in files:
        head = REPO.check_output("head -c 8 %s", path)
        assert head == "Salted__", f"{path} starts with {head!r}, not OpenSSL's encrypted header"
    # The passphrase is a secure option (never on a command line): the environment overrides
    # the configuration file's.
    wrong = REPO.run(
        "cd / && runuser -u postgres -- env"
        " PGBACKREST_REPO1_CIPHER_PASS=not-the-passphrase-0123456789"
        " pgbackrest --stanza=%s --output=json info",
        STANZA,
    )
    # Its message quotes the undecryptable bytes: not text.
    text = wrong.stdout_bytes.decode("utf-8", "replace")
    status = json.loads(text, strict=False)[0]["status"] if wrong.rc == 0 and text else None
    print(
        f"\ninfo with a wrong passphrase: rc {wrong.rc}, status {status},"
        f" {wrong.stderr_bytes.decode('utf-8', 'replace').strip()[:200]}"
    )
    assert wrong.rc != 0 or status["code"] != 0
    # The passphrase is on both hosts of the stanza (the side that runs a command encrypts),
    # readable by root and postgres only.
    for host in (DB, REPO):
        conf = host.file("/etc/pgbackrest/pgbackrest.conf")
        assert conf.mode == 0o640 and conf.user == "root" and conf.group == "postgres"


@pytest.mark.parametrize("kind", ["full", "diff"])
def test_the_timers_are_scheduled(kind):
    timer = REPO.service(f"pgbackrest-{kind}.timer")
    assert timer.is_enabled and timer.is_running
    calendar = REPO.check_output(
        "systemctl show -p TimersCalendar --value pgbackrest-%s.timer", kind
    )
    print(f"\npgbackrest-{kind}.timer: {calendar}")
    assert "OnCalendar=" in calendar
    assert not DB.file(f"/etc/systemd/system/pgbackrest-{kind}.timer").exists


@pytest.mark.parametrize(
    ("host", "unit", "limit"),
    [
        ("backup-repo", "pgbackrest-backup@full.service", 2.5),
        ("backup-repo", "pgbackrest.service", 2.5),
        ("backup-db", "pgbackrest.service", 2.5),
    ],
)
def test_the_units_are_hardened(host, unit, limit):
    target = machine(host)
    dropin = unit.replace("@full", "@")
    assert target.file(f"/etc/systemd/system/{dropin}.d/50-fastapi-ops-hardening.conf").exists
    out = target.check_output("systemd-analyze security --no-pager %s | tail -n1", unit)
    score = float(re.search(r"level for \S+: (\d+\.\d+)", out).group(1))
    print(f"\nsystemd-analyze security {unit} on {host}: {score}")
    assert score <= limit, out


def test_the_backup_service_backs_up_in_its_sandbox():
    before = len(info()["backup"])
    started = time.monotonic()
    run = REPO.run("systemctl start pgbackrest-backup@diff.service")
    seconds = time.monotonic() - started
    assert run.rc == 0, REPO.run(
        "journalctl -u pgbackrest-backup@diff.service -n 30 --no-pager"
    ).stdout
    backups = info()["backup"]
    print(
        f"\ndifferential backup by its service: {seconds:.1f} s, {before} -> {len(backups)} backups"
    )
    assert len(backups) == before + 1 and backups[-1]["type"] == "diff"


def test_new_clusters_have_data_checksums():
    assert psql("SHOW data_checksums", db="postgres") == "on"


def test_the_figures_reach_prometheus():
    for host in (DB, REPO):
        start(host, "pgbackrest-metrics.service")
    # The differential backup of the test above, once the collector has run.
    backups, waited = wait_for('pgbackrest_backup_last_completion_timestamp_seconds{type="diff"}')
    archived = wait_for("pgbackrest_archive_last_archived_timestamp_seconds > 0")[0]
    print(
        f"\nin Prometheus after {waited:.0f} s: newest diff backup"
        f" {[(r['metric']['instance'], r['value'][1]) for r in backups]},"
        f" last archived {[(r['metric']['instance'], r['value'][1]) for r in archived]}"
    )
    assert [r["metric"]["instance"].split(":")[0] for r in backups] == ["backup-repo"]
    assert [r["metric"]["instance"].split(":")[0] for r in archived] == ["backup-db"]
    assert not prometheus('ALERTS{alertname=~"PgBackRest.*"}')


def test_the_restore_check_passes():
    run, seconds, prom = verify()
    print(f"\nrestore check: exit {run.rc} in {seconds:.1f} s\n{prom}")
    assert run.rc == 0, REPO.run("journalctl -u pgbackrest-verify.service -n 40 --no-pager").stdout
    assert sample(prom, "pgbackrest_verify_success") == 1
    assert sample(prom, "pgbackrest_verify_tables") > 0
    assert sample(prom, "pgbackrest_verify_indexes") > 0
    assert sample(prom, "pgbackrest_verify_data_checksums") == 1
    # Nothing of the scratch cluster is left, and it archived nothing into the repository.
    assert not REPO.file("/var/lib/pgbackrest-verify/data").exists
    assert pgbackrest(REPO, "check").rc == 0


def test_a_corrupted_backup_fails_the_restore_check_and_fires_the_alert():
    newest = info()["backup"][-1]["label"]
    victim = REPO.check_output(
        "find %s/backup/%s/%s/pg_data -type f -printf '%%s %%p\\n'"
        " | sort -n | tail -n1 | cut -d' ' -f2",
        REPO_PATH,
        STANZA,
        newest,
    ).strip()
    REPO.check_output("cp -p %s /root/victim.bak", victim)
    REPO.check_output("printf 'corrupt!' | dd of=%s bs=1 seek=64 conv=notrunc status=none", victim)
    try:
        run, seconds, prom = verify()
        alert, waited = wait_for(
            'ALERTS{alertname="PgBackRestRestoreCheckFailed", alertstate="firing"}'
        )
        print(
            f"\ncorrupted {victim}: restore check exit {run.rc} in {seconds:.1f} s,"
            f" pgbackrest_verify_success {sample(prom, 'pgbackrest_verify_success'):.0f},"
            f" alert firing after {waited:.0f} s: {[a['metric']['instance'] for a in alert]}"
        )
        assert run.rc != 0
        assert "restore check FAILED" in REPO.check_output(
            "journalctl -u pgbackrest-verify.service -n 60 --no-pager"
        )
        assert sample(prom, "pgbackrest_verify_success") == 0
        assert sample(prom, "pgbackrest_verify_last_success_timestamp_seconds") > 0
        assert alert
    finally:
        REPO.check_output("cp -p /root/victim.bak %s && rm -f /root/victim.bak", victim)
    run, seconds, prom = verify()
    print(f"file put back: restore check exit {run.rc} in {seconds:.1f} s")
    assert run.rc == 0 and sample(prom, "pgbackrest_verify_success") == 1


def test_the_backup_alerts_read_exported_metrics():
    """Every metric the backup alert rules read is in Prometheus (once the collector and
    the restore check above have run)."""
    rules = yaml.safe_load((ROOT / "roles/prometheus/files/rules/backup.yml").read_text())
    used = {n for g in rules["groups"] for r in g["rules"] for n in metric_names(r["expr"])}
    out = REPO.check_output(
        "curl -sS --max-time 10 %s", f"http://{REPO_ADDRESS}:9090/api/v1/label/__name__/values"
    )
    live = set(json.loads(out)["data"])
    print(f"\nmetrics read by the backup alerts: {sorted(used)}")
    assert used and used <= live, sorted(used - live)


def test_the_tls_port_is_open_only_between_the_peers():
    assert (
        REPO.run(
            "python3 -c 'import socket; socket.create_connection((\"%s\", 8432), 3)'", DB_ADDRESS
        ).rc
        == 0
    )
    assert (
        DB.run(
            "python3 -c 'import socket; socket.create_connection((\"%s\", 8432), 3)'", REPO_ADDRESS
        ).rc
        == 0
    )
    for host, peer in ((DB, REPO_ADDRESS), (REPO, DB_ADDRESS)):
        rule = host.check_output("nft list ruleset | grep 'pgbackrest' || true")
        print(f"\n{rule.strip()}")
        assert peer in rule and "8432" in rule


def test_the_maintenance_switch():
    def answer(path: str) -> httpx.Response:
        with httpx.Client(verify=False, timeout=5) as client:  # the lab's self-signed cert
            return client.get(f"https://{DB_ADDRESS}{path}", headers={"Host": "backup-db"})

    refused = playbook("maintenance.yml")
    assert refused.returncode != 0 and "Say -e maintenance=on" in refused.stdout
    assert playbook("maintenance.yml", "-e", "maintenance=on").returncode == 0
    during, health = answer("/version"), answer("/health/ready")
    assert playbook("maintenance.yml", "-e", "maintenance=off").returncode == 0
    after = answer("/version")
    print(
        f"\nmaintenance on: {during.status_code} Retry-After {during.headers.get('retry-after')}"
        f" {during.text.strip()}, /health/ready {health.status_code}; off: {after.status_code}"
    )
    # The controller is not on the allow-list (the monitoring host is): Nginx answers.
    assert during.status_code == 503 and during.headers["retry-after"] == "60"
    assert during.json() == {"detail": "maintenance"}
    # Health checks still reach the app.
    assert health.status_code == 200
    assert after.status_code == 200


def test_a_target_before_the_first_backup_is_refused_and_nothing_changes():
    first_start = min(b["timestamp"]["start"] for b in info()["backup"])
    target = utc(first_start - 3600)
    started_before = psql("SELECT pg_postmaster_start_time()", db="postgres")
    run = playbook("restore.yml", "-e", f"restore_target_time='{target}'")
    out = " ".join(run.stdout.split())  # messages may be wrapped
    refusal = out[out.find("Refused") :][:400] if "Refused" in out else ""
    print(f"\nrestore.yml to {target}: exit {run.returncode}; {refusal}")
    assert run.returncode != 0
    assert "before the end of the oldest backup" in refusal
    assert "Nothing was changed" in refusal
    assert "Stop the app" not in run.stdout
    assert psql("SELECT pg_postmaster_start_time()", db="postgres") == started_before
    assert DB.service(f"{APP_SERVICE}.socket").is_running
    assert ready_through_nginx(10)[0] == 200


def test_point_in_time_restore_under_load_brings_the_rows_back():
    psql(
        "DROP TABLE IF EXISTS pitr_probe; CREATE TABLE pitr_probe (id int PRIMARY KEY, note text);"
        f" INSERT INTO pitr_probe SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g"
    )
    time.sleep(1.5)
    target = psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
    )
    time.sleep(1.5)
    psql("DROP TABLE pitr_probe")
    load = Load(
        [Target(f"https://{DB_ADDRESS}/health/ready", headers={"Host": "backup-db"})],
        connections=4,
        duration=900,
        timeout=10,
    )
    run, wall = load.around(
        lambda: playbook("restore.yml", "-e", f"restore_target_time='{target}'")
    )
    r = load.result.summary()
    print(
        f"\nPITR to {target} under load through Nginx: sent={r['sent']} failed={r['failed']}"
        f" (connection errors {r['connection_errors']}, statuses {r['statuses']})"
        f" seconds={wall:.1f}"
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # The site was in maintenance while the app was stopped: 503s, no 502, no reset.
    assert r["connection_errors"] == 0 and set(r["statuses"]) <= {200, 503}, r
    assert psql("SELECT count(*) FROM pitr_probe") == str(ROWS)
    status, waited = ready_through_nginx()
    print(f"/health/ready through Nginx: {status} after {waited:.1f} s more")
    assert status == 200
    assert psql("SELECT pg_is_in_recovery()", db="postgres") == "f"
    assert pgbackrest(DB, "check").rc == 0


def test_a_wiped_data_directory_is_restored_losing_at_most_archive_timeout():
    psql("DROP TABLE IF EXISTS rpo_probe; CREATE TABLE rpo_probe (id int PRIMARY KEY)")
    # The writer runs on the db host: each insert is one commit, logged once acknowledged.
    DB.check_output(
        "systemd-run --unit=rpo-writer --collect /bin/sh -c %s",
        "i=0; while [ $i -lt 100000 ]; do i=$((i+1));"
        ' runuser -u postgres -- psql -qAtX -d app -c "INSERT INTO rpo_probe VALUES ($i)"'
        ' >/dev/null 2>&1 && echo "$i $(date +%s.%N)" >>/root/rpo-acked.log; sleep 0.05; done',
    )
    time.sleep(ARCHIVE_TIMEOUT + 20)
    wiped = time.time()
    DB.check_output("rm -rf /var/lib/postgresql/15/main")
    time.sleep(5)
    DB.run("systemctl stop rpo-writer")
    load = Load(
        [Target(f"https://{DB_ADDRESS}/health/ready", headers={"Host": "backup-db"})],
        connections=4,
        duration=900,
        timeout=10,
    )
    run, wall = load.around(lambda: playbook("restore.yml"))
    r = load.result.summary()
    log = DB.check_output("cat /root/rpo-acked.log").splitlines()
    acked = [(int(i), float(t)) for i, t in (line.split() for line in log)]
    DB.run("rm -f /root/rpo-acked.log")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    restored = {int(i) for i in psql("SELECT id FROM rpo_probe").split()}
    before = [(i, t) for i, t in acked if t < wiped]
    lost = [(i, t) for i, t in before if i not in restored]
    rpo = wiped - min(t for i, t in lost) if lost else 0.0
    print(
        f"\nwiped the data directory under {len(acked)} acknowledged inserts ({len(before)} before"
        f" the wipe); restore.yml of the latest state: exit {run.returncode} in {wall:.1f} s;"
        f" restored {len(restored)}, lost {len(lost)} acknowledged before the wipe,"
        f" RPO {rpo:.1f} s (archive_timeout {ARCHIVE_TIMEOUT} s)"
        f"\nload through Nginx meanwhile: sent={r['sent']} failed={r['failed']}"
        f" (connection errors {r['connection_errors']}, statuses {r['statuses']})"
    )
    assert r["connection_errors"] == 0 and set(r["statuses"]) <= {200, 503}, r
    assert restored <= {i for i, t in acked}
    assert all(i in restored for i, t in before if t < wiped - ARCHIVE_TIMEOUT - 5)
    assert rpo <= ARCHIVE_TIMEOUT + 5
    assert ready_through_nginx()[0] == 200
    assert pgbackrest(DB, "check").rc == 0


def test_preflight_wants_the_passphrase_when_backups_are_on():
    run = playbook("preflight.yml", "-e", "pgbackrest_cipher_pass=")
    out = " ".join(run.stdout.split())
    print(f"\npreflight without the passphrase: exit {run.returncode}")
    assert run.returncode != 0
    assert "Set pgbackrest_cipher_pass (needed by the db hosts)" in out


def test_point_in_time_restore_onto_a_fresh_machine(tmp_path):
    """N rows, a backup, M rows, time T, K rows: PITR to T on backup-spare, which has no
    PostgreSQL; restore.yml sets it up as the inventory's db host. Last: the repository
    host then backs up backup-spare's cluster."""
    n, m, k = 1000, 500, 250
    psql(
        "DROP TABLE IF EXISTS fresh_probe; CREATE TABLE fresh_probe (id int PRIMARY KEY);"
        f" INSERT INTO fresh_probe SELECT generate_series(1, {n})"
    )
    assert REPO.run("systemctl start pgbackrest-backup@incr.service").rc == 0
    psql(f"INSERT INTO fresh_probe SELECT generate_series({n + 1}, {n + m})")
    time.sleep(1.5)
    target = psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
    )
    time.sleep(1.5)
    psql(f"INSERT INTO fresh_probe SELECT generate_series({n + m + 1}, {n + m + k})")
    # The old machine archived its last segment before it went (`check` switches WAL and
    # waits until the repository has it): the archive reaches past T.
    assert pgbackrest(DB, "check").rc == 0
    assert not SPARE.exists("psql")

    # The inventory after the db machine was replaced: db is backup-spare, nothing else
    # but the repository host.
    source = Path(INVENTORY)
    inventory = yaml.safe_load(source.read_text())
    spare = inventory["all"]["hosts"]["backup-spare"]
    for group in ("app", "cache", "lb", "spare"):
        inventory.pop(group, None)
    inventory["db"]["hosts"] = {"backup-spare": spare}
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
    shutil.copytree(source.parent / "group_vars", tmp_path / "inventory" / "group_vars")

    started = time.monotonic()
    run = playbook(
        "restore.yml", "-e", f"restore_target_time='{target}'", inventory=tmp_path / "inventory"
    )
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    count = psql("SELECT count(*) FROM fresh_probe", host=SPARE)
    print(
        f"\nPITR to {target} onto the fresh backup-spare: restore.yml exit {run.returncode}"
        f" in {seconds:.1f} s; {count} rows (N + M = {n + m}, K = {k} after the target)"
    )
    assert count == str(n + m)
    assert psql("SHOW data_checksums", db="postgres", host=SPARE) == "on"
    assert pgbackrest(SPARE, "check").rc == 0

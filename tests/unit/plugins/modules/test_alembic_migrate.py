"""alembic_migrate against the host's real PostgreSQL (TEST_DATABASE_URL overrides).

Each test gets its own database owned by a dedicated role whose password must never show
up in any output. The Alembic project is tests/unit/fixtures/alembic_project: a1 -> b2 -> c3,
with FIXTURE_SLEEP (a1 sleeps) and FIXTURE_FAIL=1 (c3 fails after creating a table).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
from ansible_collections.fastapi_ops.stack.plugins.module_utils.alembic_helper import lock_key
from ansible_collections.fastapi_ops.stack.plugins.module_utils.masking import mask_text
from ansible_collections.fastapi_ops.stack.plugins.modules import alembic_migrate

REPO = Path(__file__).resolve().parents[4]
PROJECT = REPO / "tests" / "unit" / "fixtures" / "alembic_project"
ADMIN_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
)
ROLE, PASSWORD = "fo_alembic_test", "Mig-s3cret-7Qx"


def admin_connect(dbname: str | None = None):
    parts = urlsplit(ADMIN_URL)
    conn = psycopg2.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        dbname=dbname or parts.path.lstrip("/") or "postgres",
    )
    conn.autocommit = True
    return conn


class Database:
    def __init__(self, name: str) -> None:
        self.name = name
        parts = urlsplit(ADMIN_URL)
        self.url = (
            f"postgresql+psycopg2://{ROLE}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}/{name}"
        )

    def query(self, sql: str, *args):
        conn = admin_connect(self.name)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def revision(self) -> str | None:
        if not self.query("SELECT to_regclass('alembic_version')")[0][0]:
            return None
        rows = self.query("SELECT version_num FROM alembic_version")
        return rows[0][0] if rows else None

    def tables(self) -> set[str]:
        rows = self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows} - {"alembic_version"}


@pytest.fixture(scope="session")
def migrator_role():
    conn = admin_connect()
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(f"{verb} ROLE {ROLE} LOGIN PASSWORD %s", (PASSWORD,))
    conn.close()


@pytest.fixture
def db(migrator_role):
    name = f"fo_alembic_{uuid.uuid4().hex[:10]}"
    conn = admin_connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
    yield Database(name)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


def module_args(db: Database, **extra) -> dict:
    environment = {"DATABASE_URL": db.url, **extra.pop("env", {})}
    return {
        "project_path": str(PROJECT),
        "executable": sys.executable,
        "environment": environment,
        "lock_name": f"test:{db.name}",
        **extra,
    }


def assert_no_secret(result) -> None:
    assert PASSWORD not in json.dumps(result)


def test_upgrade_then_idempotent_rerun(run_module, db):
    res = run_module(alembic_migrate.main, module_args(db), diff=True)
    assert not res.failed, res
    assert res["changed"] is True
    assert (res["from_revision"], res["to_revision"]) == (None, "c3")
    assert res["applied"] == ["a1", "b2", "c3"]
    assert res["diff"] == {"before": "revision: None\n", "after": "revision: c3\n"}
    assert res["lock_key"] == lock_key(f"test:{db.name}")
    assert db.revision() == "c3"
    assert db.tables() == {"items", "orders"}
    assert_no_secret(res)

    again = run_module(alembic_migrate.main, module_args(db))
    assert not again.failed
    assert again["changed"] is False
    assert (again["from_revision"], again["to_revision"]) == ("c3", "c3")
    assert again["applied"] == [] and again["pending"] == []


def test_check_mode_lists_pending_without_applying(run_module, db):
    res = run_module(alembic_migrate.main, module_args(db, revision="b2"))
    assert res["applied"] == ["a1", "b2"]
    res = run_module(alembic_migrate.main, module_args(db), check_mode=True, diff=True)
    assert not res.failed, res
    assert res["changed"] is True
    assert [p["revision"] for p in res["pending"]] == ["c3"]
    assert res["pending"][0]["description"].startswith("create orders")
    assert res["applied"] == []
    assert (res["from_revision"], res["to_revision"]) == ("b2", "c3")
    assert res["diff"]["after"] == "revision: c3\n"
    assert db.revision() == "b2"
    assert "orders" not in db.tables()


def test_downgrade(run_module, db):
    run_module(alembic_migrate.main, module_args(db))
    down = module_args(db, state="downgraded", revision="a1")
    res = run_module(alembic_migrate.main, down, check_mode=True)
    assert res["changed"] is True and res["to_revision"] == "a1" and db.revision() == "c3"
    res = run_module(alembic_migrate.main, down)
    assert not res.failed, res
    assert res["changed"] is True
    assert res["applied"] == ["c3", "b2"]
    assert (res["from_revision"], res["to_revision"]) == ("c3", "a1")
    assert db.revision() == "a1"
    columns = db.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name='items'"
    )
    assert {c[0] for c in columns} == {"id", "name"}
    assert run_module(alembic_migrate.main, down)["changed"] is False
    res = run_module(alembic_migrate.main, module_args(db, state="downgraded", revision="base"))
    assert res["to_revision"] is None and db.tables() == set()


def test_failure_leaves_last_good_revision_and_masks_password(run_module, db):
    res = run_module(alembic_migrate.main, module_args(db, env={"FIXTURE_FAIL": "1"}))
    assert res.failed
    assert res["changed"] is True
    assert res["applied"] == ["a1", "b2"]
    assert (res["from_revision"], res["to_revision"]) == (None, "b2")
    assert "table_that_does_not_exist" in res["msg"]
    assert "database left at revision b2" in res["msg"]
    assert "UndefinedTable" in res["error"]
    assert db.revision() == "b2"
    assert db.tables() == {"items"}  # c3's CREATE TABLE orders was rolled back
    assert_no_secret(res)
    # the fixed migration then applies from there
    res = run_module(alembic_migrate.main, module_args(db))
    assert res["applied"] == ["c3"] and db.revision() == "c3"


def test_command_runs_under_the_lock_and_check_mode_does_not_run_it(run_module, db):
    # Any migration tool: here a probe that tries the same lock (it must be taken),
    # then Alembic's own CLI with the project's env.py.
    key = lock_key(f"test:{db.name}")
    probe = (
        "import os, sqlalchemy as sa; c = sa.create_engine(os.environ['DATABASE_URL']).connect();"
        f"print('free', c.execute(sa.text('SELECT pg_try_advisory_lock({key})')).scalar())"
    )
    command = [sys.executable, "-c", probe]
    res = run_module(alembic_migrate.main, module_args(db, command=command), check_mode=True)
    assert not res.failed, res
    assert res["changed"] is False and "output" in res and res["output"] == ""
    res = run_module(alembic_migrate.main, module_args(db, command=command))
    assert not res.failed, res
    assert res["changed"] is True
    assert "free False" in res["output"]
    upgrade = [sys.executable, "-m", "alembic", "upgrade", "b2"]
    res = run_module(alembic_migrate.main, module_args(db, command=upgrade))
    assert not res.failed, res
    assert db.revision() == "b2"


def test_a_list_in_the_environment_arrives_as_json(run_module, db):
    # As the app role's environment file writes it (short: longer values are masked).
    command = [sys.executable, "-c", "import os; print(os.environ['NETS'])"]
    res = run_module(alembic_migrate.main, module_args(db, command=command, env={"NETS": ["a"]}))
    assert not res.failed, res
    assert res["output"].strip() == '["a"]'


def test_failing_command_fails_with_its_output_masked(run_module, db):
    command = [sys.executable, "-c", f"import sys; print('{PASSWORD}'); sys.exit(3)"]
    res = run_module(alembic_migrate.main, module_args(db, command=command))
    assert res.failed
    assert "exited with 3" in res["msg"]
    assert_no_secret(res)


def test_unreachable_database_error_is_masked(run_module, db):
    # No DATABASE_URL: the lock connection uses alembic.ini's URL (port 1, fake password).
    args = module_args(db, url_env="NO_SUCH_VAR")
    args["environment"] = {}
    res = run_module(alembic_migrate.main, args)
    assert res.failed
    assert "ini-secret" not in json.dumps(res)
    assert "port 1 failed" in res["msg"]


def test_refuses_relative_and_implicit_downgrade(run_module, db):
    res = run_module(alembic_migrate.main, module_args(db, revision="-1"))
    assert res.failed and "relative" in res["msg"]
    res = run_module(alembic_migrate.main, module_args(db, state="downgraded"))
    assert res.failed and "explicit revision" in res["msg"]


def test_lock_timeout_when_lock_is_held(run_module, db):
    holder = admin_connect(db.name)
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (lock_key(f"test:{db.name}"),))
    try:
        started = time.monotonic()
        res = run_module(alembic_migrate.main, module_args(db, lock_timeout=1))
        assert time.monotonic() - started >= 1
    finally:
        holder.close()
    assert res.failed
    assert "could not obtain advisory lock" in res["msg"]
    assert db.revision() is None


def mask_cases():
    return [
        ("postgresql+asyncpg://app:p%40ss@db:5432/x", "postgresql+asyncpg://app:***@db:5432/x"),
        ("url=redis://:hunter22@cache:6379/0 ok", "url=redis://:***@cache:6379/0 ok"),
        ("host=db password='a b' user=x", "host=db password=*** user=x"),
    ]


@pytest.mark.parametrize(("text", "expected"), mask_cases())
def test_mask_text(text, expected):
    assert mask_text(text) == expected


# --- two real Ansible runs at once: the second waits for the first's advisory lock ---------


def ansible_run(args: dict, env_extra: dict) -> subprocess.Popen:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        **env_extra,
    )
    cmd = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-c",
        "local",
        "-i",
        "localhost,",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-m",
        "fastapi_ops.stack.alembic_migrate",
        "-a",
        json.dumps(args),
    ]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def ansible_result(proc: subprocess.Popen) -> dict:
    out, _err = proc.communicate(timeout=60)
    data = json.loads(out)
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_two_concurrent_runs_one_waits(db):
    key = lock_key(f"test:{db.name}")
    # a1 sleeps longer than an ansible start-up, also on a busy 2-core host (4 s was not)
    args = module_args(db, env={"FIXTURE_SLEEP": "8"})
    first = ansible_run(args, {})
    # Observe the first run holding the advisory lock in pg_locks before starting the second.
    seen = threading.Event()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not seen.is_set():
        rows = db.query(
            # a bigint key shows as classid = high 32 bits, objid = low 32 bits, objsubid 1
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            (key >> 32) & 0xFFFFFFFF,
            key & 0xFFFFFFFF,
        )
        if rows[0][0]:
            seen.set()
        else:
            time.sleep(0.05)
    assert seen.is_set(), "first run never took the advisory lock"
    assert db.revision() is None  # a1 (with its pg_sleep) is still running
    second = ansible_run(args, {})
    res1, res2 = ansible_result(first), ansible_result(second)
    assert not res1.get("failed"), res1
    assert not res2.get("failed"), res2
    assert res1["changed"] is True and res1["applied"] == ["a1", "b2", "c3"]
    # The second run waited for the lock, then found nothing to do.
    assert res2["lock_waited"] >= 0.5
    assert res2["changed"] is False and res2["applied"] == []
    assert res2["from_revision"] == "c3"
    assert res1["lock_waited"] < 0.5
    assert PASSWORD not in json.dumps([res1, res2])


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg"])
def test_advisory_lock_holds_on_sync_and_async_drivers(db, driver):
    from ansible_collections.fastapi_ops.stack.plugins.module_utils.alembic_helper import (
        AdvisoryLock,
        LockTimeout,
    )

    url = db.url.replace("+psycopg2", f"+{driver}")
    key = lock_key(f"test:{db.name}:{driver}")
    holders = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with AdvisoryLock(url, key, timeout=5):
        assert db.query(holders)[0][0] == 1
        with pytest.raises(LockTimeout), AdvisoryLock(url, key, timeout=0.3):
            pass
    assert db.query(holders)[0][0] == 0

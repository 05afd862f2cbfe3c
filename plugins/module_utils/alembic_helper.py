"""Run Alembic under a PostgreSQL advisory lock, inside a release's virtualenv.

This file is shipped by the ``alembic_migrate`` module and executed on the target with the
release's own interpreter::

    <venv>/bin/python alembic_helper.py REQUEST.json RESULT.json

It imports nothing from Ansible, only what the release already has: ``alembic``,
``sqlalchemy`` and the app's PostgreSQL driver (``asyncpg``, ``psycopg`` or ``psycopg2``).
Alembic runs the project's own ``env.py`` (sync or async engine alike), in this process,
while a separate connection holds ``pg_advisory_lock(key)`` for the whole run: every
migrator takes the same lock first, so two hosts never migrate at the same time.
The result is written as JSON to RESULT.json (stdout/stderr stay free for env.py's logs).
A request with a ``command`` runs that command (another migration tool) under the same
lock instead of Alembic; it then needs only ``sqlalchemy`` and the driver.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

LOCK_POLL_SECONDS = 0.2


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key derived from a name."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LockTimeout(Exception):
    """The advisory lock was not obtained within the timeout."""


class AdvisoryLock:
    """Hold a session-level pg_advisory_lock on its own connection, in a thread.

    The thread owns the connection (with its own event loop for async drivers), so the
    lock stays held while Alembic runs env.py in the main thread, with any engine.
    """

    def __init__(self, url: str, key: int, timeout: float) -> None:
        self.url = url
        self.key = key
        self.timeout = timeout
        self.waited = 0.0
        self._ready = threading.Event()
        self._release = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="advisory-lock", daemon=True)

    def __enter__(self) -> AdvisoryLock:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            from sqlalchemy.engine import make_url

            if make_url(self.url).get_dialect().is_async:
                asyncio.run(self._hold_async())
            else:
                self._hold_sync()
        except BaseException as exc:  # reported to the main thread
            self._error = exc
            self._ready.set()

    def _deadline_passed(self, started: float) -> bool:
        self.waited = time.monotonic() - started
        return self.timeout > 0 and self.waited >= self.timeout

    def _hold_sync(self) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                started = time.monotonic()
                try_lock = text("SELECT pg_try_advisory_lock(:k)")
                while not conn.execute(try_lock, {"k": self.key}).scalar():
                    if self._deadline_passed(started):
                        raise LockTimeout(self._timeout_message())
                    time.sleep(LOCK_POLL_SECONDS)
                self._deadline_passed(started)
                self._ready.set()
                self._release.wait()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        finally:
            engine.dispose()

    async def _hold_async(self) -> None:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        engine = create_async_engine(self.url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                started = time.monotonic()
                try_lock = text("SELECT pg_try_advisory_lock(:k)")
                while not (await conn.execute(try_lock, {"k": self.key})).scalar():
                    if self._deadline_passed(started):
                        raise LockTimeout(self._timeout_message())
                    await asyncio.sleep(LOCK_POLL_SECONDS)
                self._deadline_passed(started)
                self._ready.set()
                await asyncio.get_running_loop().run_in_executor(None, self._release.wait)
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        finally:
            await engine.dispose()

    def _timeout_message(self) -> str:
        return (
            f"could not obtain advisory lock {self.key} within {self.timeout}s: "
            "another migration is running"
        )


def _environment(cfg: Any, script: Any, per_migration: bool, **kwargs: Any) -> Any:
    """An EnvironmentContext that forces one transaction per migration if asked.

    env.py calls ``context.configure(...)``; Alembic's module proxy forwards that to this
    instance, so wrapping the instance's ``configure`` overrides whatever env.py passes.
    (A subclass would not do: the proxy is registered for EnvironmentContext itself.)
    """
    from alembic.runtime.environment import EnvironmentContext

    env = EnvironmentContext(cfg, script, **kwargs)
    if per_migration:
        configure = env.configure

        def forced(*args: Any, **options: Any) -> None:
            options["transaction_per_migration"] = True
            configure(*args, **options)

        env.configure = forced  # type: ignore[method-assign]
    return env


def current_heads(cfg: Any, script: Any) -> list[str]:
    """Revision(s) in the database, read through the project's env.py."""
    from alembic.runtime.environment import EnvironmentContext

    heads: list[str] = []

    def read(rev: Any, context: Any) -> list[Any]:
        heads.extend(context.get_current_heads())
        return []

    with EnvironmentContext(cfg, script, fn=read, dont_mutate=True):
        script.run_env()
    return sorted(heads)


def pending_scripts(script: Any, state: str, revision: str, heads: list[str]) -> list[Any]:
    """Scripts Alembic would run, in order (the same walk as command.upgrade/downgrade)."""
    current = tuple(heads)
    if state == "upgraded":
        return list(reversed(list(script.iterate_revisions(revision, current, implicit_base=True))))
    return list(script.iterate_revisions(current, revision, select_for_downgrade=True))


def run_migration(cfg: Any, script: Any, state: str, revision: str, per_migration: bool) -> None:
    def step(rev: Any, context: Any) -> list[Any]:
        if state == "upgraded":
            return script._upgrade_revs(revision, rev)
        return script._downgrade_revs(revision, rev)

    with _environment(cfg, script, per_migration, fn=step, destination_rev=revision):
        script.run_env()


def _as_list(revisions: Any) -> list[str]:
    if not revisions:
        return []
    return [revisions] if isinstance(revisions, str) else sorted(revisions)


def describe(scripts: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "revision": s.revision,
            "down_revision": _as_list(s.down_revision),
            "description": s.doc or "",
        }
        for s in scripts
    ]


def run_command(request: dict[str, Any]) -> dict[str, Any]:
    """Another migration tool: its command, under the same lock (check mode: not run)."""
    url = os.environ.get(request["url_env"])
    if not url:
        raise ValueError(f"no database URL for the lock: set {request['url_env']} in environment")
    key = lock_key(request["lock_name"])
    result: dict[str, Any] = {"lock_key": key, "error": None, "ran": False}
    with AdvisoryLock(url, key, float(request["lock_timeout"])) as lock:
        result["lock_waited"] = round(lock.waited, 3)
        if request["check"]:
            return result
        proc = subprocess.run(request["command"], capture_output=True, text=True, check=False)
        result.update(ran=True, rc=proc.returncode, output=(proc.stdout + proc.stderr)[-20000:])
        if proc.returncode != 0:
            result["error"] = f"{request['command'][0]} exited with {proc.returncode}"
    return result


def run(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("command"):
        return run_command(request)
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config(request["config"])
    script = ScriptDirectory.from_config(cfg)
    url = os.environ.get(request["url_env"]) or cfg.get_main_option("sqlalchemy.url")
    if not url:
        raise ValueError(
            f"no database URL: set {request['url_env']} in environment or sqlalchemy.url"
        )
    state, revision = request["state"], request["revision"]
    key = lock_key(request["lock_name"])
    result: dict[str, Any] = {"lock_key": key, "error": None}
    with AdvisoryLock(url, key, float(request["lock_timeout"])) as lock:
        result["lock_waited"] = round(lock.waited, 3)
        before = current_heads(cfg, script)
        pending = pending_scripts(script, state, revision, before)
        result.update(from_heads=before, pending=describe(pending), after_heads=before)
        if request["check"] or not pending:
            return result
        try:
            run_migration(cfg, script, state, revision, request["transaction_per_migration"])
        except Exception as exc:
            result["error"] = "".join(traceback.format_exception_only(exc)).strip()
            result["traceback"] = traceback.format_exc()
        after = current_heads(cfg, script)
    remaining = {s.revision for s in pending_scripts(script, state, revision, after)}
    result["after_heads"] = after
    result["applied"] = describe([s for s in pending if s.revision not in remaining])
    return result


def main(argv: list[str]) -> None:
    """Run the request in argv[1]; the result, errors included, goes to argv[2].

    The exit status is 0 whenever the result was written; the module reads the result.
    """
    request_path, result_path = argv[1], argv[2]
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    try:
        result = run(request)
        result["ok"] = result["error"] is None
    except Exception as exc:
        result = {
            "ok": False,
            "error": "".join(traceback.format_exception_only(exc)).strip(),
            "traceback": traceback.format_exc(),
        }
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv)

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import app
from app.config import normalise_database_url
from app.migrate import alembic_config
from app.models import Base
from tests.conftest import _asyncpg_dsn, create_database, drop_database


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def _schema_diff(url: str) -> list[object]:
    # Autogenerate's comparison: the models and the migrated schema must agree.
    engine = create_async_engine(normalise_database_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: list(compare_metadata(MigrationContext.configure(sync), Base.metadata))
            )
    finally:
        await engine.dispose()


def test_upgrade_downgrade_round_trip() -> None:
    url = create_database("fastapi_app_migr")
    try:
        config = alembic_config(url)
        command.upgrade(config, "head")
        assert {"products", "alembic_version"} <= asyncio.run(_tables(url))
        assert asyncio.run(_schema_diff(url)) == []
        command.downgrade(config, "base")
        assert "products" not in asyncio.run(_tables(url))
        command.upgrade(config, "head")
        assert "products" in asyncio.run(_tables(url))
    finally:
        drop_database(url)


def test_packaged_cli_reads_database_url_from_env(tmp_path: Path) -> None:
    """The console script and plain `alembic -c <package>/alembic.ini` both work."""
    url = create_database("fastapi_app_cli")
    env = {**os.environ, "DATABASE_URL": url.replace("postgresql://", "postgres://", 1)}
    bindir = Path(sys.executable).parent
    ini = Path(app.__file__).with_name("alembic.ini")
    try:
        # cwd elsewhere: nothing may depend on the source checkout.
        run = {"env": env, "cwd": tmp_path, "capture_output": True, "text": True}
        result = subprocess.run(  # type: ignore[call-overload]
            [bindir / "fastapi-ops-app-migrate"], check=False, **run
        )
        assert result.returncode == 0, result.stderr
        assert "products" in asyncio.run(_tables(url))
        result = subprocess.run(  # type: ignore[call-overload]
            [bindir / "alembic", "-c", ini, "current"], check=False, **run
        )
        assert result.returncode == 0, result.stderr
        assert "0001 (head)" in result.stdout
        result = subprocess.run(  # type: ignore[call-overload]
            [bindir / "alembic", "-c", ini, "downgrade", "base"], check=False, **run
        )
        assert result.returncode == 0, result.stderr
        assert "products" not in asyncio.run(_tables(url))
    finally:
        drop_database(url)


def test_migration_files_ship_in_the_package() -> None:
    package = Path(app.__file__).parent
    assert (package / "alembic.ini").is_file()
    assert (package / "migrations" / "env.py").is_file()
    assert list((package / "migrations" / "versions").glob("0001_*.py"))

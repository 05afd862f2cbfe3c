"""Shared helpers for the data scenario: lab hosts, secrets from molecule.yml, the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import testinfra
import yaml

SCENARIO = Path(__file__).resolve().parents[1]
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", SCENARIO.parents[1]))
MOLECULE_YML = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
GROUP_VARS = MOLECULE_YML["provisioner"]["inventory"]["group_vars"]["all"]


def inventory_file() -> str:
    return os.environ["MOLECULE_INVENTORY_FILE"]


def psql(host, sql: str) -> str:
    """One query as the postgres superuser over the local socket; the bare result."""
    return host.check_output("cd / && runuser -u postgres -- psql -AtXq -c %s", sql).strip()


def lab_host(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory_file()}")


@pytest.fixture(scope="session")
def db():
    return lab_host("data-db")


@pytest.fixture(scope="session")
def app():
    return lab_host("data-app")


@pytest.fixture(scope="session")
def out():
    return lab_host("data-out")


@pytest.fixture(scope="session")
def db_address(db) -> str:
    return db.backend.get_variables()["ansible_host"]


@pytest.fixture(scope="session")
def secrets() -> dict[str, str]:
    return {
        "pg": GROUP_VARS["postgresql_app_password"],
        "redis": GROUP_VARS["redis_app_password"],
    }

"""`fastapi-ops-app-migrate [alembic args]`: Alembic with the packaged alembic.ini.

Without arguments it runs `upgrade head`. The URL comes from DATABASE_URL.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic.config import Config
from alembic.config import main as alembic_main

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(database_url: str | None = None) -> Config:
    """Config for programmatic use (tests, tooling); logging left to the caller."""
    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logger"] = False
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv) or ["upgrade", "head"]
    alembic_main(argv=["-c", str(ALEMBIC_INI), *args], prog="fastapi-ops-app-migrate")


if __name__ == "__main__":
    main()

"""`fastapi-ops-app-token --subject NAME [--scope SCOPE]... [--ttl SECONDS]`: print a
bearer token for this app, signed with SECRET_KEY for APP_NAME (both from the environment
or `.env`; no DATABASE_URL needed).

The token grants only the scopes given: writes need `--scope products:write`.
Exit status 2, with one line on stderr, for a missing or short key or a bad argument.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from app.auth import WRITE_SCOPE, mint
from app.config import SettingsError, load_token_settings

DEFAULT_TTL = 3600
MAX_TTL = 30 * 24 * 3600  # a token cannot be revoked but by rotating the key: keep it short


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage: scripts show it as it is (`--help` has the usage).
        self.exit(2, f"{self.prog}: {message}\n")


def _parser() -> _Parser:
    parser = _Parser(
        prog="fastapi-ops-app-token",
        description="Print a bearer token signed with SECRET_KEY for APP_NAME.",
    )
    parser.add_argument(
        "--subject", required=True, metavar="NAME", help="who the token is for (claim sub)"
    )
    parser.add_argument(
        "--scope",
        action="append",
        default=[],
        dest="scopes",
        metavar="SCOPE",
        help=f"a scope to grant, e.g. {WRITE_SCOPE}; repeat for several",
    )
    parser.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_TTL,
        metavar="SECONDS",
        help=f"seconds the token is valid, 1 to {MAX_TTL} (default {DEFAULT_TTL})",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.subject.strip():
        parser.error("--subject must not be blank")
    if any(not scope or any(c.isspace() for c in scope) for scope in args.scopes):
        parser.error("a --scope must be one word")
    if not 1 <= args.ttl <= MAX_TTL:
        parser.error(f"--ttl must be 1 to {MAX_TTL} seconds")
    try:
        settings = load_token_settings()
    except SettingsError as exc:
        parser.error(str(exc))
    secret = settings.secret_key.get_secret_value()
    print(mint(secret, settings.app_name, args.subject, args.scopes, args.ttl))


if __name__ == "__main__":
    main()

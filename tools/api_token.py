"""A token of the deployed app for the clients that write (drills, benchmarks, the demo),
minted on the first app host by playbooks/token.yml:

    python -m tools.api_token INVENTORY [--subject S] [--ttl N] [--out FILE]

prints the token, or writes it to FILE (0600) and prints nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tools.playbook import run_playbook


class TokenError(RuntimeError):
    """playbooks/token.yml failed; the message ends with its output."""


def mint_to_file(inventory: str | Path, path: Path, subject: str, ttl: int = 3600) -> None:
    """Run playbooks/token.yml: the token is written to `path` (0600)."""
    extra = {"token_file": str(path.resolve()), "app_token_subject": subject, "app_token_ttl": ttl}
    run = run_playbook("token.yml", inventory, "-e", json.dumps(extra), timeout=300)
    if run.returncode != 0:
        raise TokenError(f"playbooks/token.yml failed:\n{(run.stdout + run.stderr)[-3000:]}")


def token_for(inventory: str | Path, subject: str, ttl: int = 3600) -> str:
    """A products:write token for `subject`, valid `ttl` seconds."""
    with tempfile.TemporaryDirectory(prefix="fastapi-ops-token-") as tmp:
        path = Path(tmp) / "token"
        mint_to_file(inventory, path, subject, ttl)
        return path.read_text().strip()


def auth_headers(token: str) -> dict[str, str]:
    """The headers a write sends."""
    return {"Authorization": f"Bearer {token}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inventory")
    parser.add_argument("--subject", default="automation", help="who the token is for")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds it is valid")
    parser.add_argument("--out", type=Path, help="write it to this file (0600) instead")
    args = parser.parse_args()
    try:
        if args.out:
            mint_to_file(args.inventory, args.out, args.subject, args.ttl)
        else:
            print(token_for(args.inventory, args.subject, args.ttl))
    except TokenError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

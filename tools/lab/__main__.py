"""Local lab of Debian 12 machines booted with systemd-nspawn.

python -m tools.lab up NAME[:GROUP,GROUP...] ... [--inventory FILE]
python -m tools.lab down [NAME ...]
python -m tools.lab status | inventory [-o FILE] | ssh NAME [COMMAND ...]
"""

from __future__ import annotations

import argparse
import sys

from . import lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.lab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", required=True)

    up = sub.add_parser("up", help="create and boot machines (idempotent)")
    up.add_argument(
        "machines",
        nargs="+",
        metavar="NAME[:GROUPS]",
        help="machine name, optionally with comma-separated inventory groups",
    )
    up.add_argument("--inventory", "-i", help="also write the lab's inventory to this file")

    down = sub.add_parser("down", help="stop and remove machines (all when none named)")
    down.add_argument("machines", nargs="*", metavar="NAME")

    sub.add_parser("status", help="list machines, addresses and state")

    inv = sub.add_parser("inventory", help="print (or write) the Ansible inventory")
    inv.add_argument("machines", nargs="*", metavar="NAME", help="only these machines")
    inv.add_argument("--output", "-o", help="write to this file instead of stdout")

    ssh = sub.add_parser("ssh", help="open a shell (or run a command) on a machine")
    ssh.add_argument("name")
    ssh.add_argument("command", nargs=argparse.REMAINDER)

    args = parser.parse_args(argv)
    try:
        if args.verb == "up":
            lab.up([lab.parse_spec(spec) for spec in args.machines], args.inventory)
        elif args.verb == "down":
            lab.down(args.machines)
        elif args.verb == "status":
            lab.status()
        elif args.verb == "inventory":
            text = lab.inventory_yaml(args.machines)
            if args.output:
                lab.write_file(args.output, text)
            else:
                sys.stdout.write(text)
        elif args.verb == "ssh":
            return lab.ssh(args.name, args.command)
    except lab.LabError as err:
        print(f"lab: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

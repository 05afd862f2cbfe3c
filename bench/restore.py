"""Backup and restore time per GB: a pgbench database of at least 1 GB, a full backup
by pgBackRest's backup service, `playbooks/restore.yml` of the latest state into a wiped
data directory (a lost disk: every byte from the repository), and the restore check
(pgbackrest-verify.service) on the repository host. pgbench's rows compress very well
(see repository_gb): real data makes the backup larger and the restore slower.

The lab: bench-pdb runs db, cache, app and lb (the restore ends with the app's
readiness), bench-prepo holds the encrypted repository (group backup); site.yml
converges both with pgbackrest_enabled.

Usage: .venv/bin/python bench/restore.py [--scale 70]   (pgbench scale 70 is about 1.05 GB)
Machines: bench-pdb, bench-prepo (torn down on exit).
Figures: bench/out/restore.json
"""

from __future__ import annotations

import argparse
import json
import time

import benchlib
from benchlib import Lab, log, table

MACHINES = {"bench-pdb": "db,cache,app,lb", "bench-prepo": "backup"}
BACKRESTED = [
    "-e",
    "pgbackrest_enabled=true",
    "-e",
    "pgbackrest_cipher_pass=bench-restore-repository-passphrase-0123456789",
]


def timed(lab: Lab, machine: str, command: str) -> float:
    started = time.monotonic()
    lab.ssh(machine, command)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 = about 1 GB)")
    args = parser.parse_args()
    with Lab("restore", MACHINES) as lab:
        lab.playbook("playbooks/site.yml", *BACKRESTED, logname="site")
        pg = "cd / && runuser -u postgres -- "
        sql = pg + "psql -AtX -d app -c "
        init = timed(
            lab,
            "bench-pdb",
            pg + f"/usr/lib/postgresql/15/bin/pgbench -i -q -s {args.scale} app",
        )
        size = int(
            lab.ssh(
                "bench-pdb",
                sql + "'SELECT pg_database_size(current_database())'",
            )
        )
        gb = size / 1024**3
        log(f"pgbench -i -s {args.scale}: {gb:.2f} GB in {init:.0f} s")
        backup = timed(lab, "bench-prepo", "systemctl start pgbackrest-backup@full.service")
        repo = int(lab.ssh("bench-prepo", "du -sb /var/lib/pgbackrest/backup | cut -f1"))
        # A lost disk: nothing for --delta to keep, every byte comes from the repository.
        lab.ssh("bench-pdb", "systemctl stop postgresql@15-main")
        lab.ssh("bench-pdb", "rm -rf /var/lib/postgresql/15/main")
        restore = lab.playbook("playbooks/restore.yml", *BACKRESTED, logname="restore")
        rows = int(lab.ssh("bench-pdb", sql + "'SELECT count(*) FROM pgbench_accounts'"))
        if rows != args.scale * 100000:
            raise SystemExit(
                f"restored pgbench_accounts has {rows} rows, not {args.scale * 100000}"
            )
        verify = timed(lab, "bench-prepo", "systemctl start pgbackrest-verify.service")
    figures = {
        "database_gb": round(gb, 3),
        "repository_gb": round(repo / 1024**3, 3),
        "full_backup_s": round(backup, 1),
        "restore_playbook_s": round(restore, 1),
        "restore_check_s": round(verify, 1),
        "full_backup_s_per_gb": round(backup / gb, 1),
        "restore_playbook_s_per_gb": round(restore / gb, 1),
        "restore_check_s_per_gb": round(verify / gb, 1),
    }
    print(
        table(
            ["figure", "value"],
            [[name, value] for name, value in figures.items()],
        )
    )
    benchlib.OUT.mkdir(parents=True, exist_ok=True)
    (benchlib.OUT / "restore.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

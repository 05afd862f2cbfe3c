"""systemctl start for the Molecule tests, through a testinfra host."""

from __future__ import annotations

from typing import Any


def start(host: Any, unit: str) -> None:
    """Start `unit`; once more if the lab lost its race with the removal of the unit's
    previous cgroup (exit 219/CGROUP, as in molecule/edge/prepare.yml). Any other failure
    fails the test with the unit's journal."""
    result = host.run(f"systemctl start {unit}")
    if result.rc == 0:
        return
    status = host.run(f"systemctl show -p ExecMainStatus --value {unit}").stdout.strip()
    journal = host.run(f"journalctl -u {unit} -n 20 --no-pager").stdout
    assert status == "219", f"{unit} did not start: {result.stderr}\n{journal}"
    print(f"{unit}: the lab's 219/CGROUP on start, started again")
    again = host.run(f"systemctl start {unit}")
    assert again.rc == 0, f"{unit} did not start again: {again.stderr}\n{journal}"

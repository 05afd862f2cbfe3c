"""What a pgBackRest repository can restore: refuse a target time outside it before
anything is stopped."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

DOCUMENTATION = r"""
name: restore_window
short_description: Decide whether pgBackRest can restore to a target time
version_added: 0.3.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - "A point-in-time restore needs a backup that ended before the target (its stop time)
    and archived WAL up to the target: before the first backup's stop there is nothing
    consistent to start from, after the newest archived WAL segment PostgreSQL would end
    recovery before the target and refuse to start. The window is [stop of the oldest
    backup, newest archived segment]."
  - C(playbooks/restore.yml) calls it before it stops anything, so that a refused target
    changes nothing. Without a target (restore the latest) it only needs one backup.
  - Invalid input does not raise; C(ok) is false and the message says why.
options:
  _input:
    description: The output of C(pgbackrest --stanza=NAME --output=json info), parsed.
    type: list
    elements: dict
    required: true
  target:
    description:
      - Target time, C(YYYY-MM-DD HH:MM:SS[.ffffff]) with a UTC offset (C(+00), C(+02:00),
        C(Z)), as PostgreSQL's C(recovery_target_time) takes it. Empty restores the latest.
    type: str
    default: ""
  archived_until:
    description:
      - Unix time of the newest WAL segment in the repository (its modification time
        there; every record in it is older). Empty when unknown.
    type: float
"""

EXAMPLES = r"""
- name: Refuse a target outside what the archive covers
  ansible.builtin.assert:
    that: window.ok
    fail_msg: "{{ window.message }}"
  vars:
    window: >-
      {{ info.stdout | from_json | fastapi_ops.stack.restore_window(
           target='2026-12-05 11:42:00+00', archived_until=1764935000) }}
"""

RETURN = r"""
_value:
  description: The decision and the window.
  type: dict
  contains:
    ok:
      description: The target is inside the window (or no target and a backup exists).
      type: bool
    message:
      description: Why, with the window in UTC.
      type: str
    target_epoch:
      description: The target as Unix time, V(None) without one.
      type: float
    earliest:
      description: Stop time of the oldest backup (Unix time), V(None) without a backup.
      type: int
    latest:
      description: The newest archived segment's time, V(None) when unknown.
      type: float
    backups:
      description: Number of backups in the stanza.
      type: int
"""

TIME = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)\s*$"
)


def parse_target(text: str) -> datetime:
    """'YYYY-MM-DD HH:MM:SS[.f](+HH[:MM]|Z)' -> aware datetime; ValueError otherwise."""
    m = TIME.match(text)
    if not m:
        raise ValueError(
            f"target time {text!r} is not 'YYYY-MM-DD HH:MM:SS+00' (a UTC offset is required)"
        )
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or ".0")[1:].ljust(6, "0"))
    zone = m.group(8)
    offset = timedelta(0)
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        if zone[0] == "-":
            offset = -offset
    return datetime(
        year, month, day, hour, minute, second, micro, tzinfo=timezone(offset)
    ).astimezone(UTC)


def _utc(epoch: float | None) -> str:
    if epoch is None:
        return "unknown"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def restore_window(info: Any, target: str = "", archived_until: Any = None) -> dict[str, Any]:
    """ok when pgBackRest can restore to `target` (or has a backup, without one)."""
    result: dict[str, Any] = {
        "ok": False,
        "target_epoch": None,
        "earliest": None,
        "latest": None,
        "backups": 0,
    }
    if not isinstance(info, list) or len(info) != 1 or not isinstance(info[0], dict):
        return dict(result, message="pgbackrest info: expected the JSON of one stanza.")
    stanza = info[0]
    backups = [b for b in stanza.get("backup") or [] if isinstance(b, dict)]
    stops = [
        int(b["timestamp"]["stop"])
        for b in backups
        if isinstance(b.get("timestamp"), dict) and "stop" in b["timestamp"]
    ]
    earliest = min(stops) if stops else None
    latest = float(archived_until) if archived_until not in (None, "") else None
    result.update(earliest=earliest, latest=latest, backups=len(backups))
    name = stanza.get("name", "?")
    if earliest is None:
        return dict(result, message=f"Stanza {name} has no backup: there is nothing to restore.")
    window = f"the archive of stanza {name} covers {_utc(earliest)} to {_utc(latest)} (UTC)"
    if not target:
        return dict(result, ok=True, message=f"Restore the latest state; {window}.")
    try:
        when = parse_target(str(target))
    except ValueError as exc:
        return dict(result, message=f"Refused: {exc}.")
    epoch = when.timestamp()
    result["target_epoch"] = epoch
    if epoch < earliest:
        return dict(
            result,
            message=(
                f"Refused: target {_utc(epoch)} is before the end of the oldest backup;"
                f" {window}. Nothing was changed."
            ),
        )
    if latest is None or epoch > latest:
        return dict(
            result,
            message=(
                f"Refused: target {_utc(epoch)} is after the newest archived WAL;"
                f" {window}. Nothing was changed."
            ),
        )
    return dict(result, ok=True, message=f"Restore to {_utc(epoch)}; {window}.")


def _filter(info: Any, target: str = "", archived_until: Any = None) -> dict[str, Any]:
    return restore_window(info, target=target, archived_until=archived_until)


class FilterModule:
    """fastapi_ops.stack.restore_window"""

    def filters(self) -> dict[str, Any]:
        return {"restore_window": _filter}

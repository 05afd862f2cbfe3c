from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ansible_collections.fastapi_ops.stack.plugins.filter.restore_window import (
    FilterModule,
    parse_target,
    restore_window,
)

STOP = int(datetime(2026, 12, 5, 11, 0, 0, tzinfo=UTC).timestamp())
ARCHIVED = STOP + 3600.0


def info(*stops: int) -> list[dict]:
    return [
        {
            "name": "main",
            "backup": [
                {"label": f"b{i}", "timestamp": {"start": s - 5, "stop": s}}
                for i, s in enumerate(stops)
            ],
        }
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-05 11:30:00+00", datetime(2026, 12, 5, 11, 30, tzinfo=UTC)),
        ("2026-12-05 13:30:00+02", datetime(2026, 12, 5, 11, 30, tzinfo=UTC)),
        ("2026-12-05 06:00:00-05:30", datetime(2026, 12, 5, 11, 30, tzinfo=UTC)),
        ("2026-12-05T11:30:00.25Z", datetime(2026, 12, 5, 11, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["2026-12-05 11:30:00", "yesterday", "2026-12-05 11:30+00", ""])
def test_parse_target_refuses_without_offset_or_shape(text):
    with pytest.raises(ValueError):
        parse_target(text)


def test_latest_needs_one_backup():
    assert restore_window(info(STOP))["ok"] is True
    empty = restore_window([{"name": "main", "backup": []}])
    assert empty["ok"] is False
    assert "no backup" in empty["message"]


def test_target_inside_the_window():
    window = restore_window(
        info(STOP, STOP + 600), target="2026-12-05 11:30:00+00", archived_until=ARCHIVED
    )
    assert window["ok"] is True
    assert window["earliest"] == STOP
    assert window["backups"] == 2
    assert window["target_epoch"] == STOP + 1800


def test_target_before_the_first_backup_is_refused():
    window = restore_window(info(STOP), target="2026-12-05 10:59:59+00", archived_until=ARCHIVED)
    assert window["ok"] is False
    assert "before the end of the oldest backup" in window["message"]
    assert "Nothing was changed" in window["message"]
    assert "2026-12-05 11:00:00+00 to 2026-12-05 12:00:00+00" in window["message"]


def test_target_after_the_archive_is_refused():
    window = restore_window(info(STOP), target="2026-12-05 12:00:01+00", archived_until=ARCHIVED)
    assert window["ok"] is False
    assert "after the newest archived WAL" in window["message"]


def test_unknown_archive_end_refuses_a_target():
    assert restore_window(info(STOP), target="2026-12-05 11:30:00+00")["ok"] is False


def test_bad_input_does_not_raise():
    assert restore_window({})["ok"] is False
    assert restore_window(info(STOP), target="noon", archived_until=ARCHIVED)["message"].startswith(
        "Refused"
    )


def test_filter_is_registered():
    assert FilterModule().filters()["restore_window"](info(STOP))["ok"] is True

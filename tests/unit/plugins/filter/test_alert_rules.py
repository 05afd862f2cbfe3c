from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.fastapi_ops.stack.plugins.filter.alert_rules import (
    AlertRulesError,
    FilterModule,
    alert_rules,
)

RULES = Path(__file__).resolve().parents[4] / "roles" / "prometheus" / "files" / "rules"
BASE = "https://example.invalid/fastapi_ops/stack/blob/main/roles/prometheus/README.md"


def test_nothing_to_change_keeps_the_text():
    text = (RULES / "targets.yml").read_text()
    assert alert_rules(text) == text
    assert alert_rules(text, {}, BASE, BASE) == text


def test_for_of_the_named_alert_only():
    text = (RULES / "targets.yml").read_text()
    out = alert_rules(text, {"PostgresDown": "10s"})
    changed = [(a, b) for a, b in zip(text.split("\n"), out.split("\n"), strict=True) if a != b]
    assert changed == [("        for: 1m", "        for: 10s")]
    # RedisDown's `for: 1m` (the next rule) is untouched.
    assert out.count("for: 1m") == text.count("for: 1m") - 1


def test_runbook_base_replaced():
    text = (RULES / "targets.yml").read_text()
    out = alert_rules(text, None, BASE, "https://wiki.example.org/runbooks")
    assert BASE not in out and "https://wiki.example.org/runbooks#postgresdown" in out


def test_not_a_duration_is_refused():
    with pytest.raises(AlertRulesError, match="PostgresDown: soon"):
        alert_rules("", {"PostgresDown": "soon"})


def test_registered():
    assert "alert_rules" in FilterModule().filters()


def test_keep_firing_for_of_the_named_alert_only():
    text = (RULES / "targets.yml").read_text()
    out = alert_rules(text, {"PostgresDown": "5s"}, "", "", {"PostgresDown": "15s"})
    changed = [(a, b) for a, b in zip(text.split("\n"), out.split("\n"), strict=True) if a != b]
    assert changed == [
        ("        for: 1m", "        for: 5s"),
        ("        keep_firing_for: 1m", "        keep_firing_for: 15s"),
    ]

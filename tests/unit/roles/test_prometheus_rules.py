"""The prometheus role's alert rules: `promtool check rules`, `promtool test rules`, and
every alert has a unit test that expects it to fire.

promtool comes from Debian's `prometheus` package (apt-get install prometheus).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tools import dashboards  # the checkout's tools/ is on sys.path (tests/unit/conftest.py)

ROLE = Path(__file__).resolve().parents[3] / "roles" / "prometheus" / "files"
RULE_FILES = sorted((ROLE / "rules").glob("*.yml"))
TEST_FILES = sorted((ROLE / "tests").glob("*.yml"))


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:  # a missing tool is a failure, not a skip
        pytest.fail("promtool not found: apt-get install prometheus (Debian) on the controller")
    return path


def alert_names() -> set[str]:
    names = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["alert"] for r in group["rules"] if "alert" in r}
    return names


def test_there_are_rules_and_tests():
    assert RULE_FILES and TEST_FILES


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path):
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path):
    result = subprocess.run(
        [promtool(), "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing():
    fired = set()
    tested_files = set()
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        tested_files |= {(path.parent / f).resolve() for f in doc["rule_files"]}
        for case in doc["tests"]:
            for t in case.get("alert_rule_test", []):
                if t.get("exp_alerts"):
                    fired.add(t["alertname"])
    assert {p.resolve() for p in RULE_FILES} <= tested_files, "a rule file has no unit test"
    assert alert_names() - fired == set(), "alerts never shown firing in a unit test"


def test_redis_down_alert_fires_when_redis_stops():
    """The issue's fixture: Redis stops -> redis_up 0 -> RedisDown fires (targets_test.yml)."""
    doc = yaml.safe_load((ROLE / "tests" / "targets_test.yml").read_text())
    cases = [
        t
        for case in doc["tests"]
        for t in case.get("alert_rule_test", [])
        if t["alertname"] == "RedisDown" and t.get("exp_alerts")
    ]
    assert cases


def ha_metrics() -> set[str]:
    """Patroni 3.0.2's and etcd 3.4's metric names, read from their sources (fixture)."""
    doc = yaml.safe_load((Path(__file__).parents[1] / "fixtures" / "ha_metrics.yml").read_text())
    return set(doc["patroni"]) | set(doc["etcd"])


def test_patroni_and_etcd_rules_use_only_names_those_versions_export():
    """Offline stand-in for a live scrape (no Patroni in the unit tests, none in the
    cluster scenario's monitoring checks): a misspelt name would leave an alert silent
    forever."""
    used = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for r in group["rules"]:
                used |= {
                    n
                    for n in dashboards.metric_names(r["expr"])
                    if n.startswith(("patroni_", "etcd_"))
                }
    assert {"patroni_primary", "etcd_server_has_leader"} <= used
    assert used - ha_metrics() == set()


RUNBOOKS = ROLE.parent / "README.md"
RUNBOOK_BASE = yaml.safe_load((ROLE.parent / "vars" / "main.yml").read_text())[
    "__prometheus_runbook_base"
]


def test_every_alert_links_its_runbook_section():
    """runbook_url = the README + #name in lower case, and the README has that section
    (### Name: GitHub's anchor is the heading in lower case)."""
    sections = set(re.findall(r"^### (\S+)$", RUNBOOKS.read_text(), re.M))
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                name = rule["alert"]
                assert rule["annotations"].get("runbook_url") == f"{RUNBOOK_BASE}#{name.lower()}"
                assert name in sections, f"{name}: no runbook section in {RUNBOOKS}"
    assert (
        yaml.safe_load((ROLE.parent / "defaults" / "main.yml").read_text())[
            "prometheus_runbook_url"
        ]
        == RUNBOOK_BASE
    )

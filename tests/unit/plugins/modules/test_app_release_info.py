"""app_release_info on an app root laid out as the app role leaves it, in a temporary directory."""

from __future__ import annotations

import json

from ansible_collections.fastapi_ops.stack.plugins.modules import app_release_info
from conftest import add_release


def test_kept_releases_in_activation_order_with_revisions_and_the_log(run_module, tmp_path):
    add_release(tmp_path, "0.1+b1", revision="0001")
    add_release(tmp_path, "0.1+b2", revision="0002")
    add_release(tmp_path, "0.1+b3")
    add_release(tmp_path, "0.1+broken", installed=False)
    deploys = [{"at": f"t{i}", "action": "deploy", "result": "ok"} for i in range(12)]
    (tmp_path / "releases.json").write_text(
        json.dumps(
            {
                "current": "0.1+b1",
                "previous": "0.1+b3",
                "attempted": "0.1+b1",
                "history": [
                    {"release": "0.1+b2", "activated": "2026-12-07T01:00:00"},
                    {"release": "0.1+b3", "activated": "2026-12-07T02:00:00"},
                    {"release": "0.1+b1", "activated": "2026-12-07T03:00:00"},
                ],
                "deploys": deploys,
            }
        )
    )
    out = run_module(app_release_info.main, {"app_root": str(tmp_path)}, check_mode=True)
    assert not out["changed"] and not out.get("failed")
    assert (out["current"], out["previous"], out["attempted"]) == ("0.1+b1", "0.1+b3", "0.1+b1")
    assert [r["release"] for r in out["releases"]] == ["0.1+broken", "0.1+b2", "0.1+b3", "0.1+b1"]
    by_name = {r["release"]: r for r in out["releases"]}
    assert by_name["0.1+b1"] == {
        "release": "0.1+b1",
        "activated": "2026-12-07T03:00:00",
        "revision": "0001",
        "installed": True,
        "current": True,
        "previous": False,
    }
    assert by_name["0.1+b3"]["previous"] and by_name["0.1+b3"]["revision"] is None
    assert not by_name["0.1+broken"]["installed"] and by_name["0.1+broken"]["activated"] is None
    assert out["deploys"] == deploys[-10:]


def test_a_host_without_the_app_has_no_releases(run_module, tmp_path):
    out = run_module(app_release_info.main, {"app_root": str(tmp_path / "none"), "deploys": 0})
    assert out["releases"] == [] and out["current"] is None and out["deploys"] == []


def test_bad_input_is_refused(run_module, tmp_path):
    (tmp_path / "releases.json").write_text("{torn")
    torn = run_module(app_release_info.main, {"app_root": str(tmp_path)})
    assert torn["failed"] and "cannot read the releases" in torn["msg"]
    negative = run_module(app_release_info.main, {"app_root": str(tmp_path), "deploys": -1})
    assert negative["failed"] and "deploys must be 0 or more" in negative["msg"]

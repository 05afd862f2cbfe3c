"""The node_exporter role's certificate expiry script never runs a certificate path as
code (it is written into a shell script run by root), and the role refuses a textfile
directory or collector option that would add lines to a unit or its environment file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROLE = Path(__file__).resolve().parents[3] / "roles" / "node_exporter"
HOSTILE = [
    "/nonexistent/$(touch pwned-subst)",
    "/nonexistent/`touch pwned-backtick`",
    '/nonexistent/"; touch pwned-quote; echo "',
    "/nonexistent/'; touch pwned-single; '",
    "/nonexistent/new\nline $(touch pwned-newline)",
    "/nonexistent/back\\slash\\",
]


def unescape(label: str) -> str:
    """A label value of the exposition format back to the string it stands for."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), label)


def test_hostile_certificate_paths_are_data(tmp_path, run_tasks):
    work = tmp_path / "work"
    textfile_dir = tmp_path / "textfile"
    work.mkdir()
    textfile_dir.mkdir()
    # A real certificate under a hostile name: the path must reach openssl unchanged.
    cert = work / "cert $(touch pwned-real) \"q\" 'x' \\.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=t",
         "-keyout", str(work / "key.pem"), "-out", str(cert)],
        capture_output=True, check=True,
    )  # fmt: skip
    script = tmp_path / "tls-certificates.sh"
    result = run_tasks(
        [
            {
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates/tls-certificates.sh.j2"),
                    "dest": str(script),
                }
            }
        ],
        {
            "node_exporter_textfile_directory": str(textfile_dir),
            "node_exporter_tls_certificates": [*HOSTILE, str(cert)],
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr

    run = subprocess.run(["sh", str(script)], cwd=work, capture_output=True, text=True, check=False)

    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.rglob("pwned*")) == []
    series = re.findall(
        r'^(\w+)\{path="((?:[^"\\]|\\.)*)"\} (\S+)$',
        (textfile_dir / "tls_certificates.prom").read_text(),
        re.M,
    )
    errors = {
        unescape(label): value
        for name, label, value in series
        if name == "node_tls_certificate_read_error"
    }
    assert errors == {**dict.fromkeys(HOSTILE, "1"), str(cert): "0"}
    not_after = [
        unescape(label)
        for name, label, _value in series
        if name == "node_tls_certificate_not_after_seconds"
    ]
    assert not_after == [str(cert)]


@pytest.mark.parametrize(
    "variables",
    [
        {"node_exporter_textfile_directory": "/var/lib/x\nExecStartPre=/bin/touch /tmp/pwned"},
        {"node_exporter_textfile_directory": "/var/lib/$(touch pwned)"},
        {
            "node_exporter_collector_options": {
                "collector.filesystem.mount-points-exclude": '^/x"\nEVIL=1'
            }
        },
    ],
    ids=["directory-newline", "directory-subst", "option-newline"],
)
def test_role_refuses_values_that_would_add_lines(run_tasks, variables):
    result = run_tasks(
        [
            {"ansible.builtin.include_vars": {"file": str(ROLE / "defaults/main.yml")}},
            {"ansible.builtin.include_tasks": {"file": str(ROLE / "tasks/assert.yml")}},
        ],
        {"node_exporter_listen_address": "127.0.0.1", **variables},
    )
    assert result.returncode != 0
    assert "node_exporter_textfile_directory must be an absolute path" in result.stdout

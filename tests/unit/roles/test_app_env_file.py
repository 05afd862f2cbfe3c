"""The app role's EnvironmentFile: every value arrives byte for byte both where systemd
reads it (at start, through systemd's own parser) and where the Gunicorn settings re-read
it on reload (their loader, taken from the template), and a value or name that would add
a variable is refused before the file is written."""

from __future__ import annotations

import ctypes
import glob
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

ROLE = Path(__file__).resolve().parents[3] / "roles" / "app"
TRICKY = {
    "SECRET_KEY": " #lead $HOME ${X} `id` $(id) \\ \\n \"dq\" 'sq' = ;x trail\t ",
    "DATABASE_URL": "postgresql+psycopg://app:p%40ss@[2001:db8::1]:5432/app",
    "EMPTY": "",
    "HASH": "#",
    "UNICODE": "pässwörd ✓",
    "DB_POOL_SIZE": 5,
}


def render(run_tasks, tmp_path: Path, env: dict):
    out = tmp_path / "app.env"
    result = run_tasks(
        [
            {"ansible.builtin.include_tasks": {"file": str(ROLE / "tasks/assert_env.yml")}},
            {
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates/app.env.j2"),
                    "dest": str(out),
                }
            },
        ],
        {"__app_env": env, "app_name": "app"},
    )
    return result, out


def systemd_reads(path: Path) -> dict[str, str]:
    """The variables systemd (libsystemd-shared, the code of EnvironmentFile=) takes from path."""
    libs = glob.glob("/usr/lib/*/systemd/libsystemd-shared-*.so") + glob.glob(
        "/usr/lib/systemd/libsystemd-shared-*.so"
    )
    if not libs:
        # A missing parser is a failure, not a skip (bootstrap installs systemd-container).
        pytest.fail(
            "libsystemd-shared not found: apt-get install systemd (its EnvironmentFile parser)"
        )
    lib = ctypes.CDLL(libs[0])
    strv = ctypes.POINTER(ctypes.c_char_p)
    lib.load_env_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(strv)]
    # As the service manager does: drop what is not a valid assignment.
    lib.strv_env_clean_with_callback.argtypes = [strv, ctypes.c_void_p, ctypes.c_void_p]
    lib.strv_env_clean_with_callback.restype = strv
    entries = strv()
    assert lib.load_env_file(None, str(path).encode(), ctypes.byref(entries)) == 0
    entries = lib.strv_env_clean_with_callback(entries, None, None)
    pairs = []
    while entries and entries[len(pairs)] is not None:
        pairs.append(entries[len(pairs)].decode().split("=", 1))
    return dict(pairs)


def gunicorn_reads(path: Path) -> dict[str, str]:
    """The variables the Gunicorn settings' loader (run on every reload) takes from path."""
    source = (ROLE / "templates/gunicorn.conf.py.j2").read_text()
    loader = source[source.index("def _unquote") : source.index("def _draining_worker")]
    environ: dict[str, str] = {}
    namespace = {"re": re, "os": SimpleNamespace(environ=environ), "_LOADED": "LOADED"}
    exec(loader, namespace)  # noqa: S102 - the role's own loader, no Jinja in it
    namespace["_load_env_file"](path)
    environ.pop("LOADED")
    return environ


def test_values_arrive_byte_for_byte(run_tasks, tmp_path):
    result, out = render(run_tasks, tmp_path, TRICKY)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {key: str(value) for key, value in TRICKY.items()}
    assert gunicorn_reads(out) == expected
    assert systemd_reads(out) == expected


@pytest.mark.parametrize(
    ("env", "bad"),
    [
        ({"SECRET_KEY": "x\nDATABASE_URL=sqlite://", "OK": "y"}, "SECRET_KEY"),
        ({"SECRET_KEY": "x\rDATABASE_URL=sqlite://"}, "SECRET_KEY"),
        ({"SECRET_KEY": "x\x00y"}, "SECRET_KEY"),
        ({"A\nDATABASE_URL": "sqlite://"}, "A\\nDATABASE_URL"),
        ({"A=B": "x"}, "A=B"),
    ],
    ids=["newline", "carriage-return", "nul", "name-newline", "name-equals"],
)
def test_values_that_would_add_a_variable_are_refused(run_tasks, tmp_path, env, bad):
    result, out = render(run_tasks, tmp_path, env)
    assert result.returncode != 0
    assert "Nothing was changed" in result.stdout
    assert f'"{bad}"' in result.stdout
    assert "DATABASE_URL=sqlite" not in result.stdout.replace("A\\nDATABASE_URL", "")
    assert not out.exists()

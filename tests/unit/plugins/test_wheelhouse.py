"""plugin_utils.wheelhouse: fingerprints, the target's marker closure, cache reuse.

No network: the source path (sdist via the app's build backend) runs in the Molecule
scenarios; here a given wheel without dependencies goes through `ensure`."""

from __future__ import annotations

import io
import os
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from ansible_collections.fastapi_ops.stack.plugins.plugin_utils import wheelhouse as wh

TARGET = wh.Target("3.11.2", ("manylinux_2_17_x86_64", "linux_x86_64"))


def make_wheel(dest: Path, name: str, version: str, requires=(), payload=b"x = 1\n") -> Path:
    dist = f"{name.replace('-', '_')}-{version}"
    path = dest / f"{dist}-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
        name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name.replace('-', '_')}/__init__.py", payload)
        archive.writestr(f"{dist}.dist-info/METADATA", meta)
        wheel_meta = (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{dist}.dist-info/WHEEL", wheel_meta)
        archive.writestr(
            f"{dist}.dist-info/RECORD",
            f"{name.replace('-', '_')}/__init__.py,sha256=abc,{len(payload)}\n"
            f"{dist}.dist-info/METADATA,,\n{dist}.dist-info/WHEEL,,\n{dist}.dist-info/RECORD,,\n",
        )
    return path


def make_sdist(path: Path, files: dict[str, bytes], mtime: float) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"shop-1.0/{name}")
            info.size, info.mtime = len(data), mtime
            archive.addfile(info, io.BytesIO(data))
    return path


def test_missing_follows_the_targets_markers_not_the_controllers(tmp_path):
    # redis needs async-timeout below 3.11.3: the target (3.11.2) does, this controller not.
    make_wheel(tmp_path, "redis", "5.0.0", ['async-timeout>=4.0.3; python_full_version < "3.11.3"'])
    make_wheel(tmp_path, "shop", "1.0", ["redis[hiredis]>=5", "uvloop; sys_platform == 'win32'"])
    wheels = wh.read_wheels(tmp_path)
    assert wh.missing(wheels, TARGET.environment()) == ["async-timeout>=4.0.3"]
    assert wh.missing(wheels, wh.Target("3.11.7", ()).environment()) == []


def test_missing_follows_extras_and_versions(tmp_path):
    make_wheel(tmp_path, "shop", "1.0", ["web[fast]>=2"])
    make_wheel(tmp_path, "web", "1.5", ['uvloop; extra == "fast"'])
    assert wh.missing(wh.read_wheels(tmp_path), TARGET.environment()) == ["web>=2", "uvloop"]


def test_sdist_digest_ignores_timestamps_and_folder_but_not_content(tmp_path):
    files = {"pyproject.toml": b"[project]\n", "shop/__init__.py": b"x = 1\n"}
    a = wh.sdist_digest(make_sdist(tmp_path / "a.tar.gz", files, 1_000))
    b = wh.sdist_digest(make_sdist(tmp_path / "b.tar.gz", files, 2_000_000))
    changed = {**files, "shop/__init__.py": b"x = 2\n"}
    c = wh.sdist_digest(make_sdist(tmp_path / "c.tar.gz", changed, 1_000))
    assert a == b != c


def test_wheel_digest_follows_its_record(tmp_path):
    one, two = tmp_path / "1", tmp_path / "2"
    one.mkdir(), two.mkdir()
    assert wh.wheel_digest(make_wheel(one, "shop", "1.0")) == wh.wheel_digest(
        make_wheel(two, "shop", "1.0")
    )
    three = tmp_path / "3"
    three.mkdir()
    assert wh.wheel_digest(make_wheel(three, "shop", "1.0", payload=b"x = 22\n")) != (
        wh.wheel_digest(make_wheel(one, "shop", "1.0"))
    )


def test_tree_stamp_sees_a_touched_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    before = wh.tree_stamp(tmp_path)
    assert wh.tree_stamp(tmp_path) == before
    os.utime(tmp_path / "a.py", (time.time() + 5, time.time() + 5))
    assert wh.tree_stamp(tmp_path) != before


def test_ensure_builds_once_then_reuses(tmp_path):
    wheel = make_wheel(tmp_path, "shop", "1.2.0")
    args = dict(name="shop", cache_dir=tmp_path / "cache", target=TARGET, python=sys.executable)
    first = wh.ensure(wheel=wheel, **args)
    again = wh.ensure(wheel=wheel, **args)
    assert first.built and not again.built
    assert (first.package, first.version, first.wheel) == ("shop", "1.2.0", wheel.name)
    assert again.path == first.path and again.fingerprint == first.fingerprint
    assert first.release_id() == f"1.2.0+{first.fingerprint[:10]}"
    assert first.release_id("42") == "1.2.0+42"
    with tarfile.open(first.archive) as archive:
        assert f"wheels/{wheel.name}" in archive.getnames()
    other = wh.ensure(wheel=wheel, extra_requirements=(), **{**args, "target": wh.Target(
        "3.12.1", TARGET.platforms)})  # fmt: skip
    assert other.path != first.path


def test_unpack_sdist_drops_the_top_folder(tmp_path):
    sdist = make_sdist(tmp_path / "shop-1.0.tar.gz", {"alembic.ini": b"[alembic]\n"}, 0)
    wh.unpack_sdist(sdist, tmp_path / "source")
    assert (tmp_path / "source" / "alembic.ini").read_bytes() == b"[alembic]\n"


def test_ensure_refuses_a_tree_without_a_project(tmp_path):
    with pytest.raises(wh.WheelhouseError, match="no pyproject.toml"):
        wh.ensure(
            name="x", cache_dir=tmp_path / "c", target=TARGET, python=sys.executable,
            source=tmp_path,
        )  # fmt: skip
    assert not list((tmp_path / "c").glob("x/*"))

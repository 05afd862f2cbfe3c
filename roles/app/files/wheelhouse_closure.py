#!/usr/bin/env python3
"""Complete a wheelhouse for a target interpreter, on the controller.

`pip download --python-version X` picks wheels for X but evaluates environment markers
(`python_full_version < "3.11.3"`, `sys_platform == ...`) with the controller's own
interpreter, so a dependency the target needs can be missing. This script reads every
wheel's Requires-Dist, evaluates the markers for the target, and downloads what is missing
(with the same pip flags) until nothing is. Exit 0 and one line per added requirement.

usage: wheelhouse_closure.py DEST PYTHON_FULL_VERSION -- PIP_DOWNLOAD_FLAGS...
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def target_environment(full_version: str) -> dict[str, str]:
    env = default_environment()
    major_minor = ".".join(full_version.split(".")[:2])
    env.update(
        python_version=major_minor,
        python_full_version=full_version,
        implementation_version=full_version,
        implementation_name="cpython",
        platform_python_implementation="CPython",
        platform_machine="x86_64",
        platform_system="Linux",
        sys_platform="linux",
        os_name="posix",
    )
    return env


def read_wheels(dest: Path) -> dict[str, tuple[str, list[Requirement]]]:
    wheels = {}
    for path in sorted(dest.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        with zipfile.ZipFile(path) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            message = Parser().parsestr(archive.read(meta).decode("utf-8"))
        requires = [Requirement(line) for line in message.get_all("Requires-Dist") or []]
        wheels[canonicalize_name(name)] = (str(version), requires)
    return wheels


def missing(wheels: dict[str, tuple[str, list[Requirement]]], env: dict[str, str]) -> list[str]:
    # Extras requested of each package by the packages that depend on it.
    extras: dict[str, set[str]] = {name: {""} for name in wheels}
    changed = True
    while changed:
        changed = False
        for name, (_, requires) in wheels.items():
            for req in requires:
                if any(_applies(req, env, extra) for extra in extras.get(name, {""})):
                    wanted = extras.setdefault(canonicalize_name(req.name), {""})
                    if not set(req.extras) <= wanted:
                        wanted.update(req.extras)
                        changed = True
    result = []
    for name, (_, requires) in wheels.items():
        for req in requires:
            if not any(_applies(req, env, extra) for extra in extras.get(name, {""})):
                continue
            have = wheels.get(canonicalize_name(req.name))
            if have is None or not req.specifier.contains(have[0], prereleases=True):
                spec = f"{req.name}{req.specifier}"
                if spec not in result:
                    result.append(spec)
    return result


def _applies(req: Requirement, env: dict[str, str], extra: str) -> bool:
    return req.marker is None or req.marker.evaluate({**env, "extra": extra})


def main(argv: list[str]) -> int:
    dest, full_version, sep, *pip_flags = argv
    if sep != "--":
        raise SystemExit(__doc__)
    env = target_environment(full_version)
    for _ in range(10):
        todo = missing(read_wheels(Path(dest)), env)
        if not todo:
            return 0
        for spec in todo:
            print(f"adding {spec} (needed on Python {full_version})")
        cmd = [sys.executable, "-m", "pip", "download", "--dest", dest, *pip_flags, *todo]
        subprocess.run(cmd, check=True)
    raise SystemExit("wheelhouse_closure: still incomplete after 10 rounds")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Offline wheelhouses for releases, built on the controller (action plugin `wheelhouse`).

A wheelhouse is the app's wheel and a wheel of every dependency for the targets' Python
and platform, packed in one tar, so that targets install with `--no-index`. A source
build also packs the files of its sdist under `source/`: what lives beside the package
(an `alembic.ini`, scripts) is there for the release's migrations and commands.

What is deployed is decided by the app's own build backend: a source tree is built into
an sdist (its include/exclude rules apply), and the wheel is built from that sdist. The
fingerprint of a release is a hash of what the sdist (or a given wheel) contains, never
of a list of folder names we guess at, so a change the project ships is a new release,
and a change it does not ship (a local venv, build products) is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

try:  # ansible-core depends on packaging; guarded so that the plugin imports without it
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
except ImportError as exc:
    PACKAGING_IMPORT_ERROR: ImportError | None = exc
else:
    PACKAGING_IMPORT_ERROR = None

LAYOUT = "wheelhouse-4"  # part of every cache key: bump when the layout changes
COMPLETE = "COMPLETE"
ARCHIVE = "wheels.tar"


class WheelhouseError(Exception):
    """A failure with a message for the user (the failing command's output included)."""


@dataclass(frozen=True)
class Target:
    python_version: str  # full version, e.g. 3.11.2: markers such as python_full_version
    platforms: tuple[str, ...]

    def pip_flags(self) -> list[str]:
        abi = "cp" + "".join(self.python_version.split(".")[:2])
        flags = ["--only-binary=:all:", "--python-version", self.python_version]
        flags += ["--implementation", "cp", "--abi", abi]
        return flags + [f"--platform={p}" for p in self.platforms]

    def environment(self) -> dict[str, str]:
        """Marker environment of the target (pip evaluates markers for the controller)."""
        env = default_environment()
        env.update(
            python_version=".".join(self.python_version.split(".")[:2]),
            python_full_version=self.python_version,
            implementation_version=self.python_version,
            implementation_name="cpython",
            platform_python_implementation="CPython",
            platform_machine="x86_64",
            platform_system="Linux",
            sys_platform="linux",
            os_name="posix",
        )
        return env


def run(argv: list[str], what: str, cwd: str | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()[-3000:]
        raise WheelhouseError(f"{what} failed ({' '.join(argv)}):\n{output}")
    return proc.stdout


def tree_stamp(source: Path) -> str:
    """A cheap key of a source tree's state: every file's path, size and mtime. Any
    change makes the sdist be built again (which decides what really changed)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            entry = f"{os.path.relpath(path, source)}\0{st.st_size}\0{st.st_mtime_ns}\n"
            digest.update(entry.encode())
    return digest.hexdigest()


def sdist_digest(sdist: Path) -> str:
    """sha256 of an sdist's member names and contents (not of its timestamps)."""
    digest = hashlib.sha256()
    with tarfile.open(sdist) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            # The top folder is <name>-<version>: the version is part of the release id.
            digest.update(member.name.split("/", 1)[-1].encode() + b"\0")
            digest.update(hashlib.sha256(archive.extractfile(member).read()).digest())
    return digest.hexdigest()


def wheel_digest(wheel: Path) -> str:
    """sha256 of a wheel's files and contents, from the entries of its RECORD."""
    with zipfile.ZipFile(wheel) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        lines = archive.read(record).decode("utf-8").splitlines()
    entries = sorted(line for line in lines if line and not line.startswith(record))
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def build_sdist(python: str, source: Path, outdir: Path) -> Path:
    """The project's sdist, by its own build backend (in an isolated environment)."""
    outdir.mkdir(parents=True, exist_ok=True)
    run([python, "-m", "build", "--sdist", "--outdir", str(outdir), str(source)], "sdist build")
    sdists = sorted(outdir.glob("*.tar.gz"))
    if len(sdists) != 1:
        raise WheelhouseError(f"expected one sdist in {outdir}, found {len(sdists)}")
    return sdists[0]


def unpack_sdist(sdist: Path, dest: Path) -> None:
    """The files of an sdist in dest, without its <name>-<version>/ top folder."""
    with tempfile.TemporaryDirectory(prefix="wheelhouse-src-") as tmp:
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        (top,) = Path(tmp).iterdir()
        shutil.move(str(top), dest)


def build_wheel(python: str, sdist: Path, outdir: Path) -> Path:
    """The app's wheel, built from its sdist like an installer would."""
    with tempfile.TemporaryDirectory(prefix="wheelhouse-src-") as tmp:
        top = Path(tmp) / "source"
        unpack_sdist(sdist, top)
        before = set(outdir.glob("*.whl"))
        run([python, "-m", "build", "--wheel", "--outdir", str(outdir), str(top)], "wheel build")
    built = sorted(set(outdir.glob("*.whl")) - before)
    if len(built) != 1:
        raise WheelhouseError(f"the wheel build left {len(built)} new wheels in {outdir}")
    return built[0]


def read_wheels(wheels: Path) -> dict[str, tuple[str, list[Requirement]]]:
    found = {}
    for path in sorted(wheels.glob("*.whl")):
        name, version, _build_tag, _tags = parse_wheel_filename(path.name)
        with zipfile.ZipFile(path) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            message = Parser().parsestr(archive.read(meta).decode("utf-8"))
        requires = [Requirement(line) for line in message.get_all("Requires-Dist") or []]
        found[canonicalize_name(name)] = (str(version), requires)
    return found


def missing(wheels: dict[str, tuple[str, list[Requirement]]], env: dict[str, str]) -> list[str]:
    """Requirements the target needs that no wheel satisfies (extras followed)."""

    def applies(req: Requirement, extra: str) -> bool:
        return req.marker is None or req.marker.evaluate({**env, "extra": extra})

    extras: dict[str, set[str]] = {name: {""} for name in wheels}
    changed = True
    while changed:
        changed = False
        for name, (_version, requires) in wheels.items():
            for req in requires:
                if any(applies(req, extra) for extra in extras.get(name, {""})):
                    wanted = extras.setdefault(canonicalize_name(req.name), {""})
                    if not set(req.extras) <= wanted:
                        wanted.update(req.extras)
                        changed = True
    result: list[str] = []
    for name, (_version, requires) in wheels.items():
        for req in requires:
            if not any(applies(req, extra) for extra in extras.get(name, {""})):
                continue
            have = wheels.get(canonicalize_name(req.name))
            if have is None or not req.specifier.contains(have[0], prereleases=True):
                spec = f"{req.name}{req.specifier}"
                if spec not in result:
                    result.append(spec)
    return result


def download(python: str, wheels: Path, target: Target, requirements: list[str]) -> None:
    """Every dependency wheel for the target, then what its markers add (pip decides
    markers with the controller's interpreter: redis needs async-timeout on 3.11.2)."""
    argv = [python, "-m", "pip", "download", "--quiet", "--dest", str(wheels), *target.pip_flags()]
    run(argv + requirements, "dependency download")
    for _round in range(10):
        todo = missing(read_wheels(wheels), target.environment())
        if not todo:
            return
        run(argv + todo, "dependency download for the target's markers")
    raise WheelhouseError("the wheelhouse is still incomplete after 10 rounds")


@dataclass
class Result:
    path: str
    archive: str
    wheel: str
    package: str
    version: str
    fingerprint: str
    built: bool
    source: bool  # the archive holds the sdist's files under source/

    def release_id(self, build: str = "") -> str:
        """<version>+<build>, the build label defaulting to the fingerprint's first 10 hex."""
        return f"{self.version}+{build or self.fingerprint[:10]}"

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def ensure(
    *,
    name: str,
    cache_dir: Path,
    target: Target,
    python: str,
    source: Path | None = None,
    wheel: Path | None = None,
    extra_requirements: tuple[str, ...] = (),
) -> Result:
    """Build the wheelhouse of a source tree or wheel, or reuse the cached one."""
    if PACKAGING_IMPORT_ERROR is not None:
        raise WheelhouseError(
            f"the Python package 'packaging' is missing on the controller: {PACKAGING_IMPORT_ERROR}"
        )
    if (source is None) == (wheel is None):
        raise WheelhouseError("give exactly one of source and wheel")
    scratch = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=_ensure_dir(cache_dir)))
    try:
        sdist = None
        if source is not None:
            if not (source / "pyproject.toml").is_file() and not (source / "setup.py").is_file():
                raise WheelhouseError(f"{source} has no pyproject.toml (nor setup.py)")
            # The sdist decides the fingerprint; a tree not touched since it was last
            # built reuses that answer instead of building the sdist again.
            seen = cache_dir / name / "sources" / f"{tree_stamp(source)}.json"
            if seen.is_file():
                package, version, fingerprint = json.loads(seen.read_text())
            else:
                sdist = build_sdist(python, source, scratch)
                package, version = map(str, parse_sdist_filename(sdist.name))
                fingerprint = sdist_digest(sdist)
        else:
            if not wheel.is_file():
                raise WheelhouseError(f"no wheel at {wheel}")
            package, version, _build_tag, _tags = parse_wheel_filename(wheel.name)
            fingerprint = wheel_digest(wheel)
        key = json.dumps(
            [LAYOUT, fingerprint, target.python_version, target.platforms, extra_requirements]
        )
        home = cache_dir / name / hashlib.sha256(key.encode()).hexdigest()[:16]
        marker = home / COMPLETE
        built = False
        if not marker.is_file():
            if source is not None and sdist is None:
                sdist = build_sdist(python, source, scratch)
            _build(home, target, python, extra_requirements, sdist, wheel)
            built = True
        if source is not None and sdist is not None:
            # Before and after the build: a backend may write into the tree (setuptools'
            # egg-info), and the next run must still recognise it.
            _ensure_dir(seen.parent)
            answer = json.dumps([str(package), str(version), fingerprint])
            seen.write_text(answer)
            (seen.parent / f"{tree_stamp(source)}.json").write_text(answer)
        info = json.loads(marker.read_text())
        return Result(
            path=str(home),
            archive=str(home / ARCHIVE),
            wheel=info["wheel"],
            package=str(package),
            version=str(version),
            fingerprint=fingerprint,
            built=built,
            source=bool(info.get("source")),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build(
    home: Path,
    target: Target,
    python: str,
    extra: tuple[str, ...],
    sdist: Path | None,
    wheel: Path | None,
) -> None:
    # Built beside the final place, then renamed: a killed run leaves no half wheelhouse.
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=_ensure_dir(home.parent)))
    try:
        wheels = partial / "wheels"
        wheels.mkdir()
        if sdist is not None:
            app_wheel = build_wheel(python, sdist, wheels)
            unpack_sdist(sdist, partial / "source")
        else:
            app_wheel = Path(shutil.copy2(wheel, wheels / wheel.name))
        download(python, wheels, target, [str(app_wheel), *extra])
        with tarfile.open(partial / ARCHIVE, "w") as archive:
            archive.add(wheels, arcname="wheels")
            if sdist is not None:
                archive.add(partial / "source", arcname="source")
        info = {"wheel": app_wheel.name, "source": sdist is not None}
        (partial / COMPLETE).write_text(json.dumps(info) + "\n")
        shutil.rmtree(home, ignore_errors=True)
        os.rename(partial, home)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

"""Shared helpers of the lab benchmarks (bench/*.py): lab machines that are always torn
down, timed Ansible runs, wrk against lab addresses only, local servers started and
stopped, tables and JSON figures.

Not a benchmark itself: it lives in a package so `make bench` (python bench/*.py) skips it.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "bench" / "out"
VENV_BIN = REPO / ".venv" / "bin"
LAB_NET = ipaddress.ip_network("198.18.0.0/15")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '')}"

from tools.api_token import auth_headers, token_for  # noqa: E402
from tools.lab.lab import lab_processes, ssh_cmd  # noqa: E402  (REPO on sys.path)

# A write token outlives any benchmark.
WRITE_TOKEN_TTL = 4 * 3600


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Lab:
    """Lab machines for one benchmark: `with Lab("stack", {"bench-lb": "lb", ...}) as lab:`.
    The machines go down on exit, on an exception, on SIGTERM/SIGINT, and at interpreter
    exit — only these names, never anyone else's."""

    def __init__(self, name: str, machines: dict[str, str]):
        for m in machines:
            if not m.startswith("bench-") or len(m) > 12:
                raise SystemExit(f"lab machine {m!r}: must start with bench- and be <= 12 chars")
        self.name, self.machines = name, machines
        self.dir = OUT / name
        self.inventory = self.dir / "hosts.yml"
        self.addresses: dict[str, str] = {}
        self._down = False

    def __enter__(self) -> Lab:
        atexit.register(self.down)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.down()
        raise SystemExit(128 + signum)

    def up(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # The lab's group_vars (secrets, rate-limit exemption of the load host) sit next
        # to the inventory so Ansible picks them up.
        shutil.rmtree(self.dir / "group_vars", ignore_errors=True)
        shutil.copytree(REPO / "inventories" / "lab" / "group_vars", self.dir / "group_vars")
        # Fresh machines: a leftover from a killed run is replaced.
        self.down(force=True)
        self._down = False
        specs = [f"{m}:{g}" if g else m for m, g in self.machines.items()]
        subprocess.run(
            [sys.executable, "-m", "tools.lab", "up", *specs, "--inventory", str(self.inventory)],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        import yaml

        data = yaml.safe_load(self.inventory.read_text())
        hosts = data["all"]["children"]["lab"]["hosts"]
        self.addresses = {m: hosts[m]["ansible_host"] for m in self.machines}
        log(f"lab {self.name}: up {self.addresses}")

    def down(self, force: bool = False) -> None:
        if self._down and not force:
            return
        self._down = True
        subprocess.run(
            [sys.executable, "-m", "tools.lab", "down", *self.machines],
            cwd=REPO,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not force:
            log(f"lab {self.name}: down {list(self.machines)}")

    def write_headers(self, subject: str) -> dict[str, str]:
        """Headers of the benchmark's writes: a products:write token for `subject`, minted
        on the lab's first app host."""
        return auth_headers(token_for(self.inventory, subject, ttl=WRITE_TOKEN_TTL))

    def ssh(self, machine: str, command: str, check: bool = True) -> str:
        proc = subprocess.run(
            [*ssh_cmd(self.addresses[machine]), command],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and proc.returncode != 0:
            raise SystemExit(f"{machine}: {command!r} failed: {proc.stderr.strip()[-500:]}")
        return proc.stdout

    def playbook(
        self,
        playbook: str,
        *args: str,
        env: dict[str, str] | None = None,
        logname: str | None = None,
    ) -> float:
        """Runs a playbook against this lab; returns its wall time in seconds."""
        logfile = self.dir / f"{logname or Path(playbook).stem}.log"
        cmd = ["ansible-playbook", "-i", str(self.inventory), playbook, *args]
        full_env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **(env or {})}
        t0 = time.monotonic()
        with open(logfile, "w") as fh:
            proc = subprocess.run(
                cmd, cwd=REPO, env=full_env, stdout=fh, stderr=subprocess.STDOUT, check=False
            )
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            tail = logfile.read_text().splitlines()[-25:]
            raise SystemExit(f"{' '.join(cmd)} failed (see {logfile}):\n" + "\n".join(tail))
        log(f"lab {self.name}: {playbook} {' '.join(args)} in {wall:.1f}s")
        return wall


def lab_tls() -> ssl.SSLContext:
    """A TLS client context for the lab's self-signed certificates."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def http_ok(url: str, timeout: float = 1) -> bool:
    """True when url answers 2xx/3xx (https: the lab's certificates are not checked)."""
    context = lab_tls() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context):
            return True
    except OSError:  # URLError and HTTPError (an error status) included
        return False


def wait_for(
    proc: subprocess.Popen[Any], ready: Callable[[], bool], what: str, timeout: float, every: float
) -> None:
    """Wait until ready() while the server process proc runs; SystemExit when it exits or
    timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited during start-up")
        if ready():
            return
        time.sleep(every)
    raise SystemExit(f"{what} did not start in {timeout:g} s")


def stop(proc: subprocess.Popen[Any], timeout: float = 20, sig: int = signal.SIGTERM) -> None:
    """Stop proc with sig, killed when it takes longer than timeout seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def recap(logfile: Path) -> dict[str, int]:
    """Sums of the PLAY RECAP counters of a playbook log (changed, ok, failed...)."""
    totals: dict[str, int] = {}
    text = logfile.read_text()
    recap_part = text.rsplit("PLAY RECAP", 1)[-1]
    for key, value in re.findall(r"(\w+)=(\d+)", recap_part):
        totals[key] = totals.get(key, 0) + int(value)
    return totals


def check_lab_url(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if ipaddress.ip_address(host) not in LAB_NET:
        raise SystemExit(f"{url}: not a lab address; refusing to send load")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def wrk(
    url: str,
    duration: int = 10,
    connections: int = 32,
    threads: int = 2,
    headers: dict[str, str] | None = None,
    script: str | None = None,
    script_args: list[str] | None = None,
) -> dict[str, float | int]:
    """One bounded wrk run from this host; req/s, p50/p99 in ms, non-2xx and socket errors."""
    check_lab_url(url)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=duration + 60
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "socket_errors_detail": dict(
            zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True)
        )
        if sock
        else {},
    }


class FreshReads:
    """wrk runs in which every request reads a product not read before (fresh_ids.lua): a
    Redis miss and a PostgreSQL read in the app. `seed` products of the same shape are
    inserted on `db_machine` after `first_id`; each run starts after the ids of the last."""

    SCRIPT = str(Path(__file__).parent / "fresh_ids.lua")

    def __init__(self, lab: Lab, db_machine: str, url: str, first_id: int, seed: int = 60000):
        lab.ssh(
            db_machine,
            'cd /tmp && runuser -u postgres -- psql -q -d app -c "INSERT INTO products'
            f" (sku, name, category, price, stock) SELECT 'SEED-{first_id}-' || g, 'Bench product',"
            f" 'bench', 9.99, 0 FROM generate_series(1, {seed}) g\"",
        )
        self.url, self.next_id, self.last_id = url, first_id + 1, first_id + seed

    def wrk(self, duration: int, connections: int, headers: dict[str, str]) -> dict:
        r = wrk(
            self.url,
            duration,
            connections,
            headers=headers,
            script=self.SCRIPT,
            script_args=[str(self.next_id), "2"],
        )
        self.next_id += r["requests"] + 2 * connections + 10
        if self.next_id > self.last_id:
            raise SystemExit("ran out of seeded products; raise FreshReads' seed")
        return r


_TICK = os.sysconf("SC_CLK_TCK")


def _process_table() -> dict[int, tuple[int, float]]:
    """pid: (parent pid, CPU seconds of the process and of its children it has reaped)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            # ppid is field 4; utime, stime, cutime, cstime are fields 14-17 (proc(5)).
            ticks = sum(int(x) for x in fields[11:15])
            table[int(entry.name)] = (int(fields[1]), ticks / _TICK)
    return table


def _host_busy() -> float:
    """CPU seconds the whole host has been busy since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(x) for x in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICK


class CpuMeter:
    """The CPU time each lab machine (its whole process tree on this host), the load
    generator (this process's reaped children: wrk) and the host spend during a block:
    where a request's CPU goes, on a host whose cores all of them share.

        with CpuMeter(list(lab.machines)) as cpu: r = wrk(...)
        cpu.seconds  # {"bench-app": 9.1, ..., "wrk": 3.2, "host busy": 19.6, "wall": 10.0}
    """

    def __init__(self, machines: list[str]):
        self.machines = machines
        self.seconds: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        roots = lab_processes()
        table = _process_table()
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _cpu) in table.items():
            kids.setdefault(ppid, []).append(pid)
        sample = {}
        for name in self.machines:
            total, todo = 0.0, [roots[name]] if name in roots else []
            while todo:
                pid = todo.pop()
                total += table.get(pid, (0, 0.0))[1]
                todo.extend(kids.get(pid, []))
            sample[name] = total
        own = os.times()
        sample["wrk"] = own.children_user + own.children_system
        sample["host busy"] = _host_busy()
        sample["wall"] = time.monotonic()
        return sample

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        self.seconds = {k: round(end[k] - self._start[k], 2) for k in end}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else 0.0


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(h) for h in headers]] + [
        [f"{c:.1f}" if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict[str, object]:
    cpu = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": os.uname().release,
    }


def commit() -> str:
    """The commit measured, with -dirty when the tree has changes."""
    return subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def write_json(name: str, data: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    data = {
        "bench": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "commit": commit(),
        **data,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    log(f"figures written to {path}")
    return path

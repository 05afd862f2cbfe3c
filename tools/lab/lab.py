"""The lab: Debian 12 machines booted by systemd-nspawn on a host bridge.

Everything the lab makes is named so that `down` can find it again without trusting
its own state file (which a killed run may not have written): trees live under
STATE_DIR/machines, processes are the systemd-nspawn whose command line points there,
the bridge and the nftables table carry fixed names.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = Path(os.environ.get("LAB_STATE_DIR", "/var/lib/fastapi-ops-lab"))
CACHE_DIR = Path(os.environ.get("LAB_CACHE_DIR", "/var/cache/fastapi-ops-lab"))
SUBNET = ipaddress.ip_network(os.environ.get("LAB_SUBNET", "198.18.0.0/24"))
BRIDGE = "fopslab0"
NFT_TABLE = "fastapi_ops_lab"
MIRROR = os.environ.get("LAB_MIRROR", "http://deb.debian.org/debian")
BOOT_TIMEOUT = 180
FIRST_ADDRESS = 10  # .1 is the host, .2-.9 are left for services on the bridge

BASE_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-apt",
    "iproute2",
    "openssh-server",
    "sudo",
    "ca-certificates",
]
# command -> the Debian package that provides it
REQUIRED_COMMANDS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "nft": "nftables",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
SSH_OPTIONS = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=3",
]

BASE = CACHE_DIR / "base-bookworm"
MACHINES = STATE_DIR / "machines"
STATE_FILE = STATE_DIR / "state.json"
KEY = STATE_DIR / "id_ed25519"


class LabError(Exception):
    """A failure the user can act on; printed without a traceback."""


@dataclass
class Machine:
    name: str
    groups: list[str] = field(default_factory=list)
    address: str = ""

    @property
    def dir(self) -> Path:
        return MACHINES / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"


# --------------------------------------------------------------------------- helpers


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, text=True, capture_output=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def write_file(path: str | Path, text: str, mode: int = 0o644) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def parse_spec(spec: str) -> Machine:
    name, _sep, groups = spec.partition(":")
    # The veth is named vb-NAME and interface names stop at 15 characters.
    if not name or len(name) > 12 or not name.replace("-", "").isalnum():
        raise LabError(f"bad machine name {name!r}: use 1-12 letters, digits or '-'")
    return Machine(name, [g for g in groups.split(",") if g])


@contextlib.contextmanager
def locked():
    """Serialise lab changes: several Molecule scenarios may share the lab."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def load_state() -> dict[str, Machine]:
    if not STATE_FILE.exists():
        return {}
    data = json.loads(STATE_FILE.read_text())
    return {n: Machine(n, m["groups"], m["address"]) for n, m in data["machines"].items()}


def save_state(machines: dict[str, Machine]) -> None:
    data = {
        "subnet": str(SUBNET),
        "machines": {m.name: {"groups": m.groups, "address": m.address} for m in machines.values()},
    }
    write_file(STATE_FILE, json.dumps(data, indent=2) + "\n")


def preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (systemd-nspawn, bridges, nftables): run it with sudo")
    missing = sorted({pkg for cmd, pkg in REQUIRED_COMMANDS.items() if not shutil.which(cmd)})
    if missing:
        raise LabError(f"missing commands; install them with: apt-get install {' '.join(missing)}")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise LabError("the kernel has no overlay filesystem (modprobe overlay)")


# --------------------------------------------------------------------------- processes


def lab_processes() -> dict[str, int]:
    """PIDs of the systemd-nspawn processes booting our trees, by machine name."""
    found = {}
    prefix = str(MACHINES) + "/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"systemd-nspawn"):
            continue
        for arg in argv:
            text = arg.decode(errors="replace")
            if text.startswith(prefix) and text.endswith("/root"):
                found[text[len(prefix) : -len("/root")]] = int(entry.name)
    return found


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def parent_wrapper(pid: int) -> int | None:
    """The reboot loop that started this nspawn, if any."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if WRAPPER.encode() in Path(f"/proc/{ppid}/cmdline").read_bytes():
            return ppid
    return None


def stop_process(pid: int, grace: float = 10.0) -> None:
    """Ask nspawn to power the machine off; kill it (and its init) if it lingers."""
    wrapper = parent_wrapper(pid)
    if wrapper:  # first, so it does not boot the machine again
        with contextlib.suppress(ProcessLookupError):
            os.kill(wrapper, signal.SIGKILL)
    inits = children(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in [pid, *inits]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


# --------------------------------------------------------------------------- host network


def check_subnet() -> None:
    routes = json.loads(run(["ip", "-j", "route", "show"]).stdout or "[]")
    for route in routes:
        dst, dev = route.get("dst", ""), route.get("dev", "")
        if dst in ("", "default") or dev == BRIDGE:
            continue
        net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        if net.overlaps(SUBNET):
            raise LabError(
                f"lab subnet {SUBNET} overlaps route {dst} on {dev}; "
                "pick another with LAB_SUBNET=… (e.g. 198.19.0.0/24)"
            )


def gateway() -> str:
    return str(SUBNET.network_address + 1)


def ensure_bridge() -> None:
    if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    address = f"{gateway()}/{SUBNET.prefixlen}"
    if address not in run(["ip", "-br", "addr", "show", BRIDGE]).stdout:
        run(["ip", "addr", "add", address, "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def ensure_nat() -> None:
    """Outbound for apt: forwarding on, masquerade the lab range (our own table only)."""
    previous = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    saved = STATE_DIR / "ip_forward.before"
    if not saved.exists():
        write_file(saved, previous + "\n")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    rules = f"""
table inet {NFT_TABLE} {{}}
delete table inet {NFT_TABLE}
table inet {NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{BRIDGE}" accept
    oifname "{BRIDGE}" ct state established,related accept
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ip saddr {SUBNET} oifname != "{BRIDGE}" masquerade
  }}
}}
"""
    run(["nft", "-f", "-"], input=rules)


def remove_host_network() -> None:
    run(["nft", "delete", "table", "inet", NFT_TABLE], check=False)
    run(["ip", "link", "delete", BRIDGE], check=False)
    saved = STATE_DIR / "ip_forward.before"
    if saved.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(saved.read_text())
        saved.unlink()


# --------------------------------------------------------------------------- trees


def ensure_base() -> None:
    """Debootstrap Debian 12 once; later machines are overlays on top of it."""
    if (BASE / ".complete").exists():
        return
    tmp = CACHE_DIR / "base-bookworm.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    print(f"lab: building the Debian 12 base tree in {BASE} (once, about a minute)", flush=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            "bookworm",
            str(tmp),
            MIRROR,
        ]
    )
    mirror_security = MIRROR.replace("/debian", "/debian-security")
    write_file(tmp / "etc/apt/sources.list", "")
    write_file(
        tmp / "etc/apt/sources.list.d/debian.sources",
        f"""\
Types: deb
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {mirror_security}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
""",
    )
    run(["chroot", str(tmp), "systemctl", "enable", "systemd-networkd"])
    run(["chroot", str(tmp), "apt-get", "clean"])
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every machine gets its own host keys
    (tmp / ".complete").touch()
    shutil.rmtree(BASE, ignore_errors=True)
    tmp.rename(BASE)


def ensure_key() -> None:
    if not KEY.exists():
        KEY.unlink(missing_ok=True)
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fastapi-ops-lab", "-f", str(KEY)]
        )


def mounted(path: Path) -> bool:
    return str(path) in {line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()}


def remove_tree(name: str) -> None:
    root = MACHINES / name / "root"
    while mounted(root):
        run(["umount", "-l", str(root)], check=False)
    shutil.rmtree(MACHINES / name, ignore_errors=True)


def make_tree(m: Machine) -> None:
    upper, work = m.dir / "upper", m.dir / "work"
    for d in (upper, work, m.root):
        d.mkdir(parents=True, exist_ok=True)
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={BASE},upperdir={upper},workdir={work}",
            str(m.root),
        ]
    )
    write_file(m.root / "etc/hostname", m.name + "\n")
    write_file(m.root / "etc/machine-id", secrets.token_hex(16) + "\n", 0o444)
    write_file(m.root / "etc/hosts", f"127.0.0.1 localhost\n{m.address} {m.name}\n")
    # Sorts before the image's 80-container-host0.network, which would ask for DHCP.
    write_file(
        m.root / "etc/systemd/network/10-host0.network",
        f"""\
[Match]
Name=host0

[Network]
Address={m.address}/{SUBNET.prefixlen}
Gateway={gateway()}
LinkLocalAddressing=no
IPv6AcceptRA=no
""",
    )
    pub = (KEY.with_suffix(".pub")).read_text()
    write_file(m.root / "root/.ssh/authorized_keys", pub, 0o600)
    (m.root / "root/.ssh").chmod(0o700)
    run(["chroot", str(m.root), "ssh-keygen", "-A"])


# --------------------------------------------------------------------------- machines


# systemd-nspawn exits with 133 when the machine reboots: boot it again, as
# systemd-nspawn@.service does (RestartForceExitStatus=133), so reboot drills work.
REBOOT_LOOP = 'while :; do "$@"; rc=$?; [ "$rc" -eq 133 ] || exit "$rc"; done'
WRAPPER = "fastapi-ops-lab-boot"


def boot(m: Machine) -> None:
    log = open(m.dir / "console.log", "w")  # noqa: SIM115 - handed to the child
    subprocess.Popen(
        [
            "sh",
            "-c",
            REBOOT_LOOP,
            WRAPPER,
            "systemd-nspawn",
            "-D",
            str(m.root),
            "--boot",
            f"--machine={m.name}",
            f"--network-bridge={BRIDGE}",
            "--register=no",
            "--keep-unit",
            "--resolv-conf=copy-host",
            "--console=passive",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def ssh_cmd(address: str) -> list[str]:
    return ["ssh", "-i", str(KEY), *SSH_OPTIONS, f"root@{address}"]


def system_state(m: Machine) -> str:
    proc = run(
        [*ssh_cmd(m.address), "systemctl", "is-system-running", "--wait"], check=False, timeout=60
    )
    return proc.stdout.strip()


def wait_ready(m: Machine) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    state = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            state = system_state(m)
        if state in ("running", "degraded"):
            return
        if m.name not in lab_processes():
            raise LabError(f"{m.name}: systemd-nspawn exited; see {m.dir / 'console.log'}")
        time.sleep(1)
    raise LabError(
        f"{m.name}: not ready after {BOOT_TIMEOUT}s (state {state!r}); see {m.dir / 'console.log'}"
    )


def allocate(m: Machine, taken: set[str]) -> None:
    if m.address:
        return
    for host in list(SUBNET.hosts())[FIRST_ADDRESS - 1 :]:
        if str(host) not in taken:
            m.address = str(host)
            taken.add(m.address)
            return
    raise LabError(f"no free address left in {SUBNET}")


def up(wanted: list[Machine], inventory: str | None = None) -> None:
    preflight()
    with locked():
        check_subnet()
        ensure_base()
        ensure_key()
        ensure_bridge()
        ensure_nat()
        state = load_state()
        running = lab_processes()
        taken = {m.address for m in state.values()}
        todo = []
        for m in wanted:
            old = state.get(m.name)
            if old and old.name in running and system_state(old) in ("running", "degraded"):
                old.groups = m.groups or old.groups
                print(f"lab: {m.name} already up at {old.address}")
                continue
            if m.name in running:
                stop_process(running[m.name], grace=0)
            remove_tree(m.name)
            m.address = old.address if old else ""
            allocate(m, taken)
            state[m.name] = m
            todo.append(m)
        save_state(state)  # before booting, so a killed run leaves a findable trail

        def create(m: Machine) -> None:
            make_tree(m)
            boot(m)
            wait_ready(m)
            print(f"lab: {m.name} up at {m.address}", flush=True)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            for future in [pool.submit(create, m) for m in todo]:
                future.result()
        if todo:
            print(f"lab: {len(todo)} machine(s) booted in {time.monotonic() - started:.1f}s")
    if inventory:
        write_file(inventory, inventory_yaml([m.name for m in wanted]))


def down(names: list[str]) -> None:
    preflight()
    with locked():
        state = load_state()
        running = lab_processes()
        on_disk = {p.name for p in MACHINES.iterdir()} if MACHINES.exists() else set()
        targets = set(names) if names else set(state) | set(running) | on_disk
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            list(pool.map(stop_process, [running[n] for n in targets if n in running]))
        for name in targets:
            remove_tree(name)
            state.pop(name, None)
            print(f"lab: {name} removed")
        save_state(state)
        if not state:
            remove_host_network()
            STATE_FILE.unlink(missing_ok=True)
            print("lab: bridge and nftables rules removed")


def status() -> None:
    state, running = load_state(), lab_processes()
    if not state:
        print("lab: no machines")
    for m in state.values():
        s = "running" if m.name in running else "stopped"
        print(f"{m.name:<14} {m.address:<15} {s:<8} {','.join(m.groups)}")


def inventory_yaml(names: list[str] | None = None) -> str:
    """An Ansible YAML inventory of the lab (or of the named machines): every machine
    in group `lab`, plus its own groups."""
    state = load_state()
    if names:
        state = {n: m for n, m in state.items() if n in names}
    common = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(KEY),
        "ansible_ssh_common_args": " ".join(SSH_OPTIONS[:-2]),
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    lines = ["# Written by python -m tools.lab; regenerated on every `up`.", "all:", "  vars:"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in common.items()]
    lines += ["  children:", "    lab:", "      hosts:"]
    for m in state.values():
        lines += [
            f"        {m.name}:",
            f"          ansible_host: {m.address}",
            f"          private_address: {m.address}",
        ]
    groups: dict[str, list[str]] = {}
    for m in state.values():
        for g in m.groups:
            groups.setdefault(g, []).append(m.name)
    for g, hosts in sorted(groups.items()):
        lines += [f"    {g}:", "      hosts:"] + [f"        {h}: {{}}" for h in hosts]
    return "\n".join(lines) + "\n"


def ssh(name: str, command: list[str]) -> int:
    state = load_state()
    if name not in state:
        raise LabError(f"no machine {name!r}; `python -m tools.lab status` lists them")
    return subprocess.call([*ssh_cmd(state[name].address), *command])

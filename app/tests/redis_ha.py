"""A throwaway Redis master, replica and one Sentinel on free loopback ports, over TLS
as the collection deploys them (tls=True: TLS ports only, the replication and the Sentinel
too, certificates of a throwaway CA naming 127.0.0.1) or in plain text.

ACLs as the collection deploys them: the default user is off, the app's user has the app's
ACL on the data nodes and, on the Sentinel, only what redis-py's Sentinel client sends.
Sentinel and replication use their own users; `admin` is the tests' own.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis

from tests.conftest import free_port

SERVICE = "fastapi-ops"
APP_USER, APP_PASSWORD = "app", "app-secret"
APP_ACL = "-@all +@read +@write +@connection +@transaction +eval +evalsha -@dangerous -@admin"
# On the Sentinel: HELLO/AUTH need no permission; CLIENT SETINFO (unknown to Redis 7.0,
# whose errors redis-py ignores) could be allowed too, to keep newer Sentinels' ACL LOG quiet.
SENTINEL_APP_ACL = "-@all +sentinel|masters"
ADMIN = {"username": "admin", "password": "admin-secret"}
_SENTINEL_USER, _SENTINEL_PASSWORD = "sentinel", "sentinel-secret"
# What Sentinel needs on the data nodes (Redis' Sentinel documentation).
_SENTINEL_ACL = (
    "allchannels +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish"
    " +info +client|setname +client|kill +script|kill"
)


def _wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except AssertionError:
            raise
        except Exception as error:  # not up yet
            last = error
        else:
            last = None
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")
        time.sleep(0.1)


def _make_certificates(directory: Path) -> None:
    """ca.crt, and server.key/server.crt signed by it for 127.0.0.1 (openssl)."""
    directory.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=test Redis CA",
    )
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )


class RedisHA:
    def __init__(self, root: Path, tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required (.ci/host-services installs it)"
        sentinel = shutil.which("redis-sentinel")
        self.server = binary
        self.sentinel_binary = sentinel or binary  # redis-server runs as Sentinel too
        self.root = root
        self.ports = [free_port(), free_port()]
        self.sentinel_port = free_port()
        assert len({*self.ports, self.sentinel_port}) == 3
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.tls = tls
        if tls:
            _make_certificates(root / "tls")

    @property
    def ca(self) -> str:
        return str(self.root / "tls" / "ca.crt")

    def _listen(self, port: int) -> str:
        """redis.conf/sentinel.conf lines: the port, plain or TLS only."""
        if not self.tls:
            return f"port {port}\n"
        tls = self.root / "tls"
        return (
            f"port 0\ntls-port {port}\ntls-cert-file {tls / 'server.crt'}\n"
            f"tls-key-file {tls / 'server.key'}\ntls-ca-cert-file {tls / 'ca.crt'}\n"
            "tls-auth-clients no\ntls-replication yes\n"
        )

    def _client(self, port: int, **options: object) -> Redis:
        tls = {"ssl": True, "ssl_ca_certs": self.ca} if self.tls else {}
        return Redis(host="127.0.0.1", port=port, socket_timeout=2, **ADMIN, **tls, **options)  # type: ignore[arg-type]

    # URL and sentinels as the app gets them; the URL's host:port must not matter.
    @property
    def redis_url(self) -> str:
        if self.tls:
            return f"rediss://{APP_USER}:{APP_PASSWORD}@127.0.0.1:1/0?ssl_ca_certs={self.ca}"
        return f"redis://{APP_USER}:{APP_PASSWORD}@127.0.0.1:1/0"

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{self.sentinel_port}"]

    def start(self) -> None:
        self.start_node(self.ports[0])
        self.start_node(self.ports[1], replicaof=self.ports[0])
        conf = self.root / "sentinel" / "sentinel.conf"
        conf.parent.mkdir()
        conf.write_text(
            f"{self._listen(self.sentinel_port)}bind 127.0.0.1\ndir {conf.parent}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.ports[0]} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            # Also the pause before an automatic failover may follow another one (x2).
            f"sentinel failover-timeout {SERVICE} 3000\n"
            f"sentinel auth-user {SERVICE} {_SENTINEL_USER}\n"
            f"sentinel auth-pass {SERVICE} {_SENTINEL_PASSWORD}\n"
            "user default off\n"
            f"user {APP_USER} on >{APP_PASSWORD} {SENTINEL_APP_ACL}\n"
            f"user {ADMIN['username']} on >{ADMIN['password']} +@all\n"
        )
        self._spawn(self.sentinel_port, [self.sentinel_binary, str(conf), "--sentinel"])
        self.wait_healthy()

    def start_node(self, port: int, replicaof: int | None = None) -> None:
        directory = self.root / str(port)
        directory.mkdir(exist_ok=True)
        conf = directory / "redis.conf"  # Sentinel rewrites it: a new one on each start
        conf.write_text(
            f"{self._listen(port)}bind 127.0.0.1\nsave ''\nappendonly no\ndir {directory}\n"
            "repl-diskless-sync-delay 0\n"
            f"masteruser replica\nmasterauth replica-secret\n"
            + (f"replicaof 127.0.0.1 {replicaof}\n" if replicaof else "")
            + "user default off resetpass resetkeys resetchannels -@all\n"
            f"user {APP_USER} on >{APP_PASSWORD} ~* resetchannels {APP_ACL}\n"
            f"user {_SENTINEL_USER} on >{_SENTINEL_PASSWORD} {_SENTINEL_ACL}\n"
            "user replica on >replica-secret +psync +replconf +ping\n"
            f"user {ADMIN['username']} on >{ADMIN['password']} ~* &* +@all\n"
        )
        self._spawn(port, [self.server, str(conf)])

    def _spawn(self, port: int, command: list[str]) -> None:
        log_path = self.root / f"{port}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.procs[port] = proc

        def up() -> bool:
            assert proc.poll() is None, f"{command} exited: {log_path.read_text()[-2000:]}"
            return bool(self._client(port).ping())

        _wait_until(up, 10, f"{command}")

    def kill(self, port: int) -> None:
        """kill -9: no goodbye to replicas, clients or the Sentinel."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)

    def node(self, port: int) -> Redis:
        return self._client(port, decode_responses=True)

    def sentinel(self) -> Redis:
        return self._client(self.sentinel_port, decode_responses=True)

    def master(self) -> int:
        """The master's port, as the Sentinel says."""
        _host, port = self.sentinel().sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def replica(self) -> int:
        return next(port for port in self.ports if port != self.master())

    def wait_healthy(self, timeout: float = 30) -> None:
        """Both nodes up, the replica in sync with the master, the Sentinel agreeing."""

        def healthy() -> bool:
            master, replica = self.master(), self.replica()
            state = self.sentinel().sentinel_master(SERVICE)
            replicas = self.sentinel().sentinel_slaves(SERVICE)
            return (
                not (state["is_sdown"] or state["is_odown"])
                and self.node(master).execute_command("ROLE")[0] == "master"
                and self.node(replica).execute_command("ROLE")[3] == "connected"
                and int(self.node(replica).execute_command("ROLE")[2]) == master
                and any(
                    r["port"] == replica
                    and not (r["is_sdown"] or r["is_disconnected"])
                    and r["master-link-status"] == "ok"
                    and r["master-port"] == master
                    for r in replicas
                )
            )

        _wait_until(healthy, timeout, "a healthy master, replica and sentinel")

"""Verify role common on two lab machines: common-a (group app), common-b (monitoring)."""


def test_base_packages(host):
    for pkg in ("nftables", "acl", "ca-certificates", "tzdata"):
        assert host.package(pkg).is_installed


def test_nftables_active_and_default_deny(host):
    svc = host.service("nftables")
    assert svc.is_running and svc.is_enabled
    chain = host.check_output("nft list chain inet fastapi_ops input")
    assert "policy drop" in chain
    # SSH from the listed sources and the controller, never from anywhere.
    ssh = [line.strip() for line in chain.splitlines() if 'comment "ssh"' in line]
    assert ssh and all(line.startswith("ip saddr ") for line in ssh), ssh


def test_net_sysctls_applied(host):
    assert host.sysctl("net.core.somaxconn") == 4096
    assert host.sysctl("net.ipv4.tcp_fin_timeout") == 15
    assert host.file("/etc/sysctl.d/60-fastapi-ops.conf").contains("net.core.somaxconn=4096")


def test_kernel_sysctls_skipped_in_container(host):
    assert host.run("systemd-detect-virt --container").stdout.strip() == "systemd-nspawn"
    assert not host.file("/etc/sysctl.d/61-fastapi-ops-kernel.conf").exists


def test_journald_bounded(host):
    conf = host.file("/etc/systemd/journald.conf.d/60-fastapi-ops.conf")
    assert conf.contains("SystemMaxUse=1G")


def test_timezone(host):
    assert host.file("/etc/localtime").linked_to.endswith("Etc/UTC")

"""Case f of bench/stack.py: what a reader of the guide
(/work/shared/seed/fastapi-production-guide.zh.md) would have deployed, on the same lab
machines as the role's stack.

Nginx: the guide's `fastapi.conf` server and upstream as a second listener (port 8443)
on the lb, with the same certificate, minus what stock Nginx rejects or what would stop
the benchmark itself:
  - `check interval=...` (third-party upstream_check module; stock Nginx rejects it);
  - `limit_req zone=api rate=10r/s` / `limit_conn addr 10` (the role exempts the load
    host, 198.18.0.1; the guide has no exemption, so it would answer 503s at 10 r/s);
  - `ssl_ciphers ECDHE-RSA-AES256-GCM-SHA512:...` (no such suites; TLS 1.3 is used
    either way);
  - `proxy_cache api_cache` gets `proxy_cache_bypass/proxy_no_cache $http_authorization`
    so that the Authorization requests of case c are uncached here too (like for like).
Kept: `proxy_set_header Connection "upgrade"` on every request, `keepalive 32`,
its timeouts and 4k buffers, gzip, the access log with buffer=32k, HTTP/2.

App: a second Gunicorn from the same release venv and environment file, on port 8001
(transient unit bench-guide-app), with the guide's settings: 2 x cores + 1 workers
(UvicornWorker), keepalive 2, timeout 120, max_requests 1000 (+100 jitter); its pool
sizes: SQLAlchemy pool_size 20, max_overflow 10 (its asyncpg branch), Redis pool 10.
Both stacks stay up side by side, so bench/stack.py can interleave its cases.
"""

from __future__ import annotations

import os
import time

from benchlib import http_ok

GUIDE_PORT = 8443
GUIDE_APP_PORT = 8001
APP = "fastapi-ops-app"
ENV_FILE = f"/etc/{APP}/{APP}.env"
GUIDE_ENV_FILE = f"/etc/{APP}/bench-guide.env"
CURRENT = f"/srv/{APP}/current"

GUIDE_ENV = {
    "WEB_CONCURRENCY": str(2 * len(os.sched_getaffinity(0)) + 1),
    "GUNICORN_KEEPALIVE": "2",
    "GUNICORN_TIMEOUT": "120",
    "GUNICORN_MAX_REQUESTS": "1000",
    "GUNICORN_MAX_REQUESTS_JITTER": "100",
    "DB_POOL_SIZE": "20",
    "DB_MAX_OVERFLOW": "10",
    "REDIS_POOL_SIZE": "10",
}

SITE = """
log_format guide_main '$remote_addr - $remote_user [$time_local] "$request" '
                '$status $body_bytes_sent "$http_referer" '
                '"$http_user_agent" "$http_x_forwarded_for" '
                '$request_time $upstream_response_time';
proxy_cache_path /var/cache/nginx/guide levels=1:2 keys_zone=api_cache:10m
                 max_size=1g inactive=60m use_temp_path=off;

upstream fastapi_backend {
    server APP_ADDRESS:GUIDE_APP_PORT;
    keepalive 32;
}

server {
    listen GUIDE_PORT ssl http2;
    server_name _;
    access_log /var/log/nginx/guide-access.log guide_main buffer=32k flush=5s;
    keepalive_timeout 65;
    keepalive_requests 1000;
    client_max_body_size 100M;
    gzip on;
    gzip_vary on;
    gzip_proxied any;
    gzip_comp_level 6;
    gzip_types application/javascript application/json application/xml text/css
               text/javascript text/plain text/xml;

    ssl_certificate CERT;
    ssl_certificate_key KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    ssl_session_cache shared:GUIDE_SSL:10m;
    ssl_session_timeout 10m;

    add_header X-Frame-Options DENY;
    add_header X-Content-Type-Options nosniff;
    add_header X-XSS-Protection "1; mode=block";
    add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;

    location / {
        proxy_pass http://fastapi_backend;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 60s;
        proxy_send_timeout 60s;
        proxy_read_timeout 60s;
        proxy_buffering on;
        proxy_buffer_size 4k;
        proxy_buffers 8 4k;
        proxy_busy_buffers_size 8k;
        proxy_cache api_cache;
        proxy_cache_key "$scheme$request_method$host$request_uri";
        proxy_cache_valid 200 302 10m;
        proxy_cache_valid 404 1m;
        proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
        proxy_cache_bypass $http_authorization;
        proxy_no_cache $http_authorization;
    }
}
"""


def apply(lab, lb: str = "bench-lb", app: str = "bench-app") -> str:
    """Deploys the guide's recipe beside the role's; returns the base URL of its Nginx."""
    conf = lab.ssh(lb, "nginx -T 2>/dev/null | grep -m2 -E '^\\s*ssl_certificate(_key)? '")
    cert = conf.split("\n")[0].split()[1].rstrip(";")
    key = conf.split("\n")[1].split()[1].rstrip(";")
    site = (
        SITE.replace("APP_ADDRESS", lab.addresses[app])
        .replace("GUIDE_APP_PORT", str(GUIDE_APP_PORT))
        .replace("GUIDE_PORT", str(GUIDE_PORT))
        .replace("CERT", cert)
        .replace("KEY", key)
    )
    lab.ssh(
        lb,
        "mkdir -p /var/cache/nginx/guide && chown www-data /var/cache/nginx/guide"
        f" && cat > /etc/nginx/conf.d/zz-guide.conf <<'EOF'\n{site}\nEOF\n"
        " nginx -t -q && systemctl reload nginx"
        " && nft insert rule inet fastapi_ops input ip saddr 198.18.0.1"
        f" tcp dport {GUIDE_PORT} accept",
    )
    # The app's own Gunicorn settings module, which reads them all from the environment
    # (the role's gunicorn.conf.py has the role's values written in): the guide's
    # settings go into a copy of the role's environment file.
    overrides = {
        **GUIDE_ENV,
        "GUNICORN_BIND": f"0.0.0.0:{GUIDE_APP_PORT}",
        "GUNICORN_CONTROL_SOCKET": "/dev/null",
    }
    lines = "".join(f'{k}="{v}"\\n' for k, v in overrides.items())
    lab.ssh(
        app,
        f"grep -v -E '^({'|'.join(overrides)})=' {ENV_FILE} > {GUIDE_ENV_FILE}"
        f" && printf '{lines}' >> {GUIDE_ENV_FILE}"
        f" && chgrp {APP} {GUIDE_ENV_FILE} && chmod 0640 {GUIDE_ENV_FILE}"
        f" && systemd-run --unit=bench-guide-app --uid={APP} --gid={APP}"
        f" -p WorkingDirectory={CURRENT} -p EnvironmentFile={GUIDE_ENV_FILE}"
        f" -p EnvironmentFile={CURRENT}/release.env -p RuntimeDirectory=bench-guide-app"
        " -E PROMETHEUS_MULTIPROC_DIR=/run/bench-guide-app"
        f" {CURRENT}/venv/bin/gunicorn --config python:app.gunicorn_conf app.main:app"
        f" && nft insert rule inet fastapi_ops input ip saddr {lab.addresses[lb]}"
        f" tcp dport {GUIDE_APP_PORT} accept",
    )
    url = f"https://{lab.addresses[lb]}:{GUIDE_PORT}"
    deadline = time.monotonic() + 60
    while not http_ok(f"{url}/health/live", timeout=2):
        if time.monotonic() > deadline:
            raise SystemExit(
                "the guide's app does not answer through its Nginx: "
                + lab.ssh(app, "journalctl -u bench-guide-app -n 20 --no-pager", check=False)
            )
        time.sleep(0.5)
    return url


def remove(lab, lb: str = "bench-lb", app: str = "bench-app") -> None:
    lab.ssh(
        app,
        "systemctl stop bench-guide-app; systemctl reset-failed bench-guide-app;"
        f" rm -f {GUIDE_ENV_FILE}",
        check=False,
    )
    lab.ssh(lb, "rm -f /etc/nginx/conf.d/zz-guide.conf && systemctl reload nginx", check=False)

"""A few real requests through the lab's Nginx over HTTPS, printed for a person to read.
The write carries a token minted on the first app host (tools.api_token).

python -m tools.smoke INVENTORY
"""

from __future__ import annotations

import sys
import uuid

import httpx
import yaml

from tools.api_token import auth_headers, token_for


def lb_address(inventory: str) -> str:
    data = yaml.safe_load(open(inventory))
    lbs = list(data["all"]["children"]["lb"]["hosts"])
    return data["all"]["children"]["lab"]["hosts"][lbs[0]]["ansible_host"]


def main() -> int:
    inventory = sys.argv[1]
    base = f"https://{lb_address(inventory)}"
    write = auth_headers(token_for(inventory, "demo-smoke", ttl=300))
    # The lab's certificate is self-signed: this is the lab, not a production client.
    with httpx.Client(base_url=base, verify=False, timeout=10) as client:
        steps = [
            ("GET", "/version", None),
            ("GET", "/health/ready", None),
            (
                "POST",
                "/api/v1/products",
                {
                    "sku": f"demo-{uuid.uuid4().hex[:6]}",
                    "name": "Demo",
                    "price": "4.20",
                    "category": "demo",
                },
            ),
        ]
        for method, path, body in steps:
            resp = client.request(
                method, path, json=body, headers=write if method == "POST" else None
            )
            print(f"{method:4} {base}{path} -> {resp.status_code} {resp.text[:120]}")
            if method == "POST" and resp.status_code == 201:
                pid = resp.json()["id"]
                for _read in range(2):
                    got = client.get(f"/api/v1/products/{pid}")
                    print(
                        f"GET  {base}/api/v1/products/{pid} -> {got.status_code} "
                        f"X-Cache-Status={got.headers.get('x-cache-status')}"
                    )
            if resp.status_code >= 400:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Small HTTP calls to a running service: one JSON request, set stock, wait for readiness.

Standard library only, so the benchmark's in-cluster Job and the tests need nothing more.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any


def http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """One request; with ADMIN_TOKEN in the environment, it goes as a bearer token (the
    service's stock changes need it when the service has one)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    if os.environ.get("ADMIN_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['ADMIN_TOKEN']}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def put_stock(url: str, sku: str, quantity: int, attempts: int = 1) -> None:
    """Set ``sku``'s stock through the service at ``url``; raises unless it answers 200.

    ``attempts``: how many times to send it while it answers 503 (a set, not an increment:
    sending it again is safe), a second apart.
    """
    for attempt in range(1, attempts + 1):
        status, _ = http_json("PUT", f"{url}/stock/{sku}", {"quantity": quantity})
        if status == 200:
            return
        if status != 503 or attempt == attempts:
            raise RuntimeError(f"PUT /stock/{sku} answered {status}")
        time.sleep(1.0)


def wait_ready(urls: list[str], seconds: float) -> bool:
    """Whether every URL's /readyz answers 200 within ``seconds`` (0: no check at all)."""
    if seconds <= 0:
        return True
    deadline = time.monotonic() + seconds
    pending = list(urls)
    while True:
        for url in list(pending):
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        pending.remove(url)
            except OSError:
                pass
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)

"""Logs: one line per order, human or JSON (LOG_FORMAT=json), each with its request id."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import ConfigError, Settings
from service.logs import BufferedHandler, JsonFormatter

from .waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def json_lines():
    """What the order logger writes through the JSON formatter, as parsed objects."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service.orders")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_a_request_id_is_echoed_or_made(client):
    assert client.get("/livez", headers={"X-Request-ID": "abc-123"}).headers[
        "X-Request-ID"] == "abc-123"
    made = {client.get("/livez").headers["X-Request-ID"] for _ in range(2)}
    assert len(made) == 2 and all(len(value) == 32 for value in made)
    for unusable in ("has space", "x" * 129, ""):
        answer = client.get("/livez", headers={"X-Request-ID": unusable})
        assert answer.headers["X-Request-ID"] != unusable


def test_json_line_per_order_with_every_field(client, json_lines):
    client.put("/stock/j", json={"quantity": 1})
    created = client.post("/orders?strategy=lock", json={"sku": "j"},
                          headers={"X-Request-ID": "req-1"})
    client.post("/orders", json={"sku": "j"}, headers={"X-Request-ID": "req-2"})
    first, second = json_lines()
    assert first["request_id"] == "req-1" and second["request_id"] == "req-2"
    assert {k: first[k] for k in ("replica", "strategy", "sku", "order_id", "outcome")} == {
        "replica": "test-replica", "strategy": "lock", "sku": "j",
        "order_id": created.get_json()["order_id"], "outcome": "created"}
    assert second["outcome"] == "out-of-stock" and second["order_id"] is None
    assert first["latency_ms"] > 0 and first["level"] == "INFO"
    assert "Order created successfully" in first["message"]


def test_a_failed_order_is_logged_with_its_problem(make_app, json_lines):
    client = make_app(redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=200).test_client()
    client.post("/orders", json={"sku": "j"}, headers={"X-Request-ID": "down"})
    (line,) = json_lines()
    assert (line["outcome"], line["request_id"], line["level"]) == (
        "unavailable", "down", "WARNING")


def run_service_once(log_format: str) -> list[str]:
    """A fresh process (no log handlers yet) that takes one order against no Redis."""
    code = (
        "from service import create_app\n"
        "c = create_app({'redis_url': 'redis://127.0.0.1:1/0', 'redis_timeout_ms': 200,"
        " 'admin_token': 't'}).test_client()\n"
        "c.post('/orders', json={'sku': 'x'}, headers={'X-Request-ID': 'one'})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"LOG_FORMAT": log_format, "PATH": ""})
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_log_format_json_makes_every_line_json():
    lines = run_service_once("json")
    parsed = [json.loads(line) for line in lines]  # every line, not only the order's
    assert any(p.get("request_id") == "one" and p.get("outcome") == "unavailable"
               for p in parsed)


def test_the_default_format_keeps_the_human_line():
    lines = run_service_once("text")
    order = [line for line in lines if "Order failed" in line]
    assert len(order) == 1 and "request_id=one" in order[0] and "sku=x" in order[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(order[0])


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"})


class CountingStream(io.StringIO):
    """A stream that counts its write calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_the_writer_thread_writes_many_lines_per_write_in_order():
    stream = CountingStream()
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter("%(message)s"))
    handler = BufferedHandler(target, interval_s=0.2)
    handler.start()
    logger = logging.getLogger("test.buffered")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        for number in range(100):
            logger.info("line %d", number)
        wait_for(lambda: stream.getvalue().count("\n") == 100, "all 100 lines written")
        assert stream.getvalue().splitlines() == [f"line {n}" for n in range(100)]
        assert stream.writes <= 2, "lines go out in batches, not one write each"
        logger.info("after")
        handler.close()  # what is still buffered at exit is written too
        assert stream.getvalue().endswith("after\n")
    finally:
        logger.removeHandler(handler)

"""The OpenAPI description (service/openapi.json) against the service.

- It is a valid OpenAPI 3.1 document (schemathesis's validator, the OpenAPI 3.1 schema), its
  schemas are valid JSON Schema 2020-12, and every ``$ref`` resolves.
- The routes and the description agree: every (path, method) the app routes is described and
  every described one is routed.
- ``GET /openapi.json`` serves the file as it is.
- Schemathesis fuzzes every operation in-process against a real Redis, with all its checks
  (no 5xx, statuses, content types, headers and bodies as described, invalid input refused,
  valid input accepted, auth enforced, ...), one operation at a time and along the
  description's links; confirms and cancels reach orders seeded for them (reserved, confirmed,
  cancelled, expired), not only unknown ids. After every request the books of the SKUs it
  named balance (stock >= 0, stock + reserved + sold == supplied, the confirmed order records
  add up to sold and the reserved ones to reserved and the holds, the per-customer counts to
  the records); after each run, those of every SKU with a key in Redis.
- The answers fuzzing cannot reach (401, 403, 413, 415, replays, limits, reservations confirmed,
  cancelled and expired, 503 of each kind, ...) are made on purpose and checked against the
  description with the same checks.

Each check is also shown to fail on a doctored input, so a pass means something.
"""

from __future__ import annotations

import copy
import io
import json
import re
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
import redis
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import FailureGroup
from werkzeug.routing import Map, Rule

from service import openapi
from service.keys import ORDER_ID_PATTERN, SKU_PATTERN, SkuKeys, sku_of_order

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = json.loads(openapi.DESCRIPTION_FILE.read_text())
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}  # Flask answers them on every route by itself
DEFAULT_SKU = "default"
ADMIN_TOKEN = "openapi-fuzz-admin-token"
# Enough stock that most generated orders for these SKUs (no body: DEFAULT_SKU; the description's
# example: shoe-42) are created, and the run still sells some of them out.
SEED_STOCK = {DEFAULT_SKU: 20_000, "shoe-42": 2_000}
# Orders placed on a SKU of their own before each fuzz run, for the confirms and cancels to reach
# (most generated order ids are pointed at one of them), in each state: how many of each.
SEED_SKU = "seeded"
SEED_ORDERS = {"expired": 2, "reserved": 5, "confirmed": 2, "cancelled": 2}


# --- The document ----------------------------------------------------------------------------


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only local references are used"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_description_is_valid_openapi_3_1():
    assert DOCUMENT["openapi"] == "3.1.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert DOCUMENT["info"]["version"] == project["version"]
    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
    schema.validate()  # raises jsonschema_rs.ValidationError against the OpenAPI 3.1 schema
    for definition in DOCUMENT["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(definition)
    for ref in refs(DOCUMENT):
        resolve(DOCUMENT, ref)


def test_invalid_description_is_refused():
    doctored = copy.deepcopy(DOCUMENT)
    del doctored["paths"]["/orders/{order_id}"]["get"]["parameters"][0]["in"]
    with pytest.raises(jsonschema_rs.ValidationError, match='"in" is a required property'):
        schemathesis.openapi.from_dict(doctored).validate()
    with pytest.raises(KeyError):
        resolve(DOCUMENT, "#/components/schemas/NoSuchSchema")


def test_examples_match_their_schemas():
    for definition in DOCUMENT["components"]["schemas"].values():
        for example in definition.get("examples", []):
            schema = {**definition, "components": DOCUMENT["components"]}
            jsonschema.validate(example, schema, cls=jsonschema.Draft202012Validator)


# --- Routes and description agree ------------------------------------------------------------


def routed_operations(url_map: Map) -> set[tuple[str, str]]:
    """(path in OpenAPI form, METHOD) of every route but static files and implicit methods."""
    operations = set()
    for rule in url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        operations |= {(path, method) for method in rule.methods or () if
                       method not in IMPLICIT_METHODS}
    return operations


def described_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items()
            for method in item if method in HTTP_METHODS}


def disagreements(routed: set[tuple[str, str]], described: set[tuple[str, str]]) -> list[str]:
    return ([f"{method} {path} is routed but not described"
             for path, method in sorted(routed - described)]
            + [f"{method} {path} is described but not routed"
               for path, method in sorted(described - routed)])


def test_routes_and_description_agree(make_app):
    app = make_app()  # as create_app builds it, blueprints and all
    assert disagreements(routed_operations(app.url_map), described_operations(DOCUMENT)) == []


def test_disagreements_are_reported():
    url_map = Map([Rule("/orders", methods=["POST"], endpoint="place"),
                   Rule("/orders/<order_id>", methods=["GET"], endpoint="get"),
                   Rule("/refunds/<int:refund_id>", methods=["POST"], endpoint="refund"),
                   Rule("/static/<path:filename>", endpoint="static")])
    routed = routed_operations(url_map)
    assert routed == {("/orders", "POST"), ("/orders/{order_id}", "GET"),
                      ("/refunds/{refund_id}", "POST")}
    described = {("/orders", "POST"), ("/orders/{order_id}", "GET"), ("/orders", "GET")}
    assert disagreements(routed, described) == [
        "POST /refunds/{refund_id} is routed but not described",
        "GET /orders is described but not routed",
    ]


def test_openapi_json_serves_the_file(make_app):
    response = make_app().test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_data() == openapi.DESCRIPTION_FILE.read_bytes()
    assert response.headers["X-Replica"] == "test-replica" and response.headers["X-Request-ID"]


# --- Answers fuzzing does not reach ----------------------------------------------------------


@pytest.fixture
def described() -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))


def assert_described(schema: schemathesis.BaseSchema, template: str, response: Any,
                     status: int, problem: str | None = None) -> None:
    """``response`` has this status (and problem type), and schemathesis's response checks
    (status, content type, headers, body) find it as the description says. A 503 made on
    purpose is not held against the server (not_a_server_error is off for it)."""
    assert response.status_code == status, response.get_data(as_text=True)
    if problem is not None:
        assert response.get_json()["type"] == f"/problems/{problem}"
    operation = schema[template][response.request.method]
    path_parameters = dict.fromkeys(re.findall(r"{(\w+)}", template), "x")
    excluded = [schemathesis.checks.not_a_server_error] if status == 503 else []
    operation.Case(path_parameters=path_parameters).validate_response(
        response, excluded_checks=excluded)


AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TOO_LARGE = b'{"quantity": 1, "sku": "' + b"a" * (16 * 1024) + b'"}'


def test_error_answers_are_described(make_app, described):
    client = make_app(admin_token=ADMIN_TOKEN).test_client()
    stock = "/stock/{sku}"
    assert_described(described, stock, client.put("/stock/x", json={"quantity": 1}), 401,
                     "unauthorized")
    assert_described(described, stock, client.put("/stock/x", json={"quantity": 1},
                                                  headers={"Authorization": "Bearer nope"}),
                     403, "forbidden")
    assert_described(described, stock, client.put("/stock/x", data=b"{", headers=AUTH,
                                                  content_type="application/json"),
                     400, "malformed-request")
    assert_described(described, stock, client.put("/stock/x", data=b"1", headers=AUTH,
                                                  content_type="text/plain"),
                     415, "unsupported-media-type")
    assert_described(described, stock, client.put("/stock/x", data=TOO_LARGE, headers=AUTH,
                                                  content_type="application/json"),
                     413, "payload-too-large")
    chunked = client.put("/stock/x", input_stream=io.BytesIO(TOO_LARGE),
                         headers={**AUTH, "Content-Type": "application/json",
                                  "Transfer-Encoding": "chunked"},
                         environ_overrides={"wsgi.input_terminated": True})
    assert_described(described, stock, chunked, 413, "payload-too-large")
    assert_described(described, stock, client.put("/stock/a/b", json={"quantity": 1},
                                                  headers=AUTH), 404, "not-found")
    assert_described(described, stock, client.get("/stock/a/b"), 404, "not-found")

    orders = "/orders"
    assert client.put("/stock/shoe-42", json={"quantity": 1}, headers=AUTH).status_code == 200
    assert_described(described, orders, client.post("/orders?strategy=none"), 400,
                     "malformed-request")
    assert_described(described, orders, client.post("/orders", headers={
        "Idempotency-Key": "caf\xe9"}), 400, "malformed-request")
    first = client.post("/orders", json={"sku": "shoe-42"}, headers={"Idempotency-Key": "k1"})
    assert_described(described, orders, first, 201)
    replay = client.post("/orders", json={"sku": "shoe-42"}, headers={"Idempotency-Key": "k1"})
    assert_described(described, orders, replay, 201)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["order_id"] == first.get_json()["order_id"]
    assert_described(described, orders, client.post("/orders", json={"sku": "shoe-42"},
                                                    headers={"Idempotency-Key": "k2"}),
                     409, "out-of-stock")
    replay = client.post("/orders", json={"sku": "shoe-42"}, headers={"Idempotency-Key": "k2"})
    assert_described(described, orders, replay, 409, "out-of-stock")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert_described(described, orders, client.post("/orders", json={"sku": "shoe-42",
                                                                      "quantity": 2},
                                                    headers={"Idempotency-Key": "k1"}),
                     422, "idempotency-key-reused")

    order = "/orders/{order_id}"
    assert_described(described, order, client.get(first.headers["Location"]), 200)
    assert_described(described, order, client.get("/orders/shoe-42~00000000000000000000"), 404,
                     "order-not-found")
    assert_described(described, order, client.get("/orders/a/b"), 404, "not-found")
    assert_described(described, "/metrics", client.get("/metrics?sku=shoe-42&sku=x"), 200)
    assert_described(described, "/metrics", client.get("/metrics?sku=no%20spaces"), 400,
                     "malformed-request")
    assert_described(described, stock, client.put("/stock/x", json={}, headers=AUTH), 422,
                     "invalid-request")  # neither quantity nor per_customer_limit

    not_allowed = client.delete("/stock/x")
    assert not_allowed.status_code == 405 and "PUT" in not_allowed.headers["Allow"]
    for response in (not_allowed, client.get("/no/such/path")):
        assert response.mimetype == "application/problem+json"
        jsonschema.validate(response.get_json(), DOCUMENT["components"]["schemas"]["Problem"])


def test_limit_and_reservation_answers_are_described(make_app, described):
    """A per-customer limit (422 customer-required, 409 customer-limit and its replay), and a
    reservation's life: reserved, confirmed or cancelled (again: the same 200), the other way
    a 409, expired; with every answer confirm and cancel give to a bad request."""
    client = make_app(admin_token=ADMIN_TOKEN).test_client()
    stock, orders, order = "/stock/{sku}", "/orders", "/orders/{order_id}"
    confirm, cancel = "/orders/{order_id}/confirm", "/orders/{order_id}/cancel"
    limited = client.put("/stock/boot-7", json={"quantity": 5, "per_customer_limit": 2},
                         headers=AUTH)
    assert_described(described, stock, limited, 200)
    assert limited.get_json() == {"sku": "boot-7", "stock": 5, "reserved": 0, "sold": 0,
                                  "per_customer_limit": 2}
    assert_described(described, orders, client.post("/orders", json={"sku": "boot-7"}), 422,
                     "customer-required")
    held = client.post("/orders", json={"sku": "boot-7", "quantity": 2, "customer_id": "c-1",
                                        "hold_s": 600})
    assert_described(described, orders, held, 201)
    assert held.get_json()["status"] == "reserved" and held.get_json()["expires_at"]
    assert held.get_json()["customer_id"] == "c-1"
    over = client.post("/orders", json={"sku": "boot-7", "customer_id": "c-1"},
                       headers={"Idempotency-Key": "k3"})
    assert_described(described, orders, over, 409, "customer-limit")
    replay = client.post("/orders", json={"sku": "boot-7", "customer_id": "c-1"},
                         headers={"Idempotency-Key": "k3"})
    assert_described(described, orders, replay, 409, "customer-limit")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert_described(described, orders, client.post("/orders", json={
        "sku": "boot-7", "customer_id": "c-2"}, headers={"Idempotency-Key": "k3"}), 422,
        "idempotency-key-reused")
    levels = client.get("/stock/boot-7")
    assert_described(described, stock, levels, 200)
    assert levels.get_json() == {"sku": "boot-7", "stock": 3, "reserved": 2, "sold": 0,
                                 "per_customer_limit": 2}
    unlimited = client.put("/stock/boot-7", json={"per_customer_limit": None}, headers=AUTH)
    assert_described(described, stock, unlimited, 200)
    assert unlimited.get_json()["per_customer_limit"] is None
    assert unlimited.get_json()["stock"] == 3

    first = held.headers["Location"]
    for template, path, status in ((order, first, "reserved"),
                                   (confirm, f"{first}/confirm", "confirmed"),
                                   (confirm, f"{first}/confirm?strategy=lock", "confirmed"),
                                   (order, first, "confirmed")):
        answer = client.post(path, json={}) if template == confirm else client.get(path)
        assert_described(described, template, answer, 200)
        assert answer.get_json()["status"] == status, answer.get_json()
    conflict = client.post(f"{first}/cancel")
    assert_described(described, cancel, conflict, 409, "order-state-conflict")
    assert conflict.get_json()["order_status"] == "confirmed"

    second = client.post("/orders", json={"sku": "boot-7", "customer_id": "c-2",
                                          "hold_s": 600}).headers["Location"]
    for path in (f"{second}/cancel?strategy=lock", f"{second}/cancel"):
        answer = client.post(path)
        assert_described(described, cancel, answer, 200)
        assert answer.get_json()["status"] == "cancelled"
    conflict = client.post(f"{second}/confirm")
    assert_described(described, confirm, conflict, 409, "order-state-conflict")
    assert conflict.get_json()["order_status"] == "cancelled"

    third = client.post("/orders", json={"sku": "boot-7", "customer_id": "c-3", "hold_s": 1})
    assert_described(described, orders, third, 201)
    time.sleep(1.1)  # past its deadline: expired, whether or not a script has expired it yet
    answer = client.get(third.headers["Location"])
    assert_described(described, order, answer, 200)
    assert answer.get_json()["status"] == "expired"
    for template, action in ((confirm, "confirm"), (cancel, "cancel")):
        conflict = client.post(f"{third.headers['Location']}/{action}?strategy=lock")
        assert_described(described, template, conflict, 409, "order-state-conflict")
        assert conflict.get_json()["order_status"] == "expired"
    assert client.get("/stock/boot-7").get_json() == {
        "sku": "boot-7", "stock": 3, "reserved": 0, "sold": 2, "per_customer_limit": None}

    for template, action in ((confirm, "confirm"), (cancel, "cancel")):
        assert_described(described, template, client.post(
            f"/orders/boot-7~00000000000000000000/{action}"), 404, "order-not-found")
        assert_described(described, template, client.post(f"/orders/not-an-id/{action}"),
                         404, "order-not-found")
        assert_described(described, template, client.post(f"/orders/a/b/{action}"), 404,
                         "not-found")
        path = f"{first}/{action}"
        assert_described(described, template, client.post(f"{path}?strategy=none"), 400,
                         "malformed-request")
        assert_described(described, template, client.post(
            path, data=b"{", content_type="application/json"), 400, "malformed-request")
        assert_described(described, template, client.post(
            path, data=b"{}", content_type="text/plain"), 415, "unsupported-media-type")
        assert_described(described, template, client.post(
            path, data=TOO_LARGE, content_type="application/json"), 413, "payload-too-large")
        for body in ({"reason": "x"}, [], None):
            assert_described(described, template, client.post(
                path, data=json.dumps(body), content_type="application/json"), 422,
                "invalid-request")


def test_unavailable_answers_are_described(make_app, described):
    """Redis refusing connections: every operation that needs it answers 503 as described."""
    client = make_app(redis_url="redis://127.0.0.1:1/0",
                      admin_token=ADMIN_TOKEN).test_client()
    for template, response in [
        ("/orders", client.post("/orders")),
        ("/orders/{order_id}", client.get("/orders/x~00000000000000000000")),
        ("/orders/{order_id}/confirm", client.post("/orders/x~00000000000000000000/confirm")),
        ("/orders/{order_id}/cancel", client.post("/orders/x~00000000000000000000/cancel",
                                                  json={})),
        ("/stock/{sku}", client.put("/stock/x", json={"quantity": 1}, headers=AUTH)),
        ("/stock/{sku}", client.get("/stock/x")),
        ("/readyz", client.get("/readyz")),
    ]:
        assert_described(described, template, response, 503, "unavailable")
    assert_described(described, "/metrics", client.get("/metrics?sku=x"), 200)
    assert_described(described, "/livez", client.get("/livez"), 200)


def test_lock_answers_are_described(make_app, redis_client, described):
    """503 lock-timeout (the SKU's lock held elsewhere; for an order, a confirm and a cancel)
    and lock-lost (the stock changed between the lock order's read and its write), as
    described."""
    app = make_app(admin_token=ADMIN_TOKEN, lock_wait_ms=50)
    client = app.test_client()
    redis_client.set(SkuKeys("held").lock, "someone-else", px=5000)
    assert_described(described, "/orders", client.post("/orders?strategy=lock",
                                                        json={"sku": "held"}),
                     503, "lock-timeout")
    for action in ("confirm", "cancel"):
        assert_described(described, f"/orders/{{order_id}}/{action}", client.post(
            f"/orders/held~00000000000000000000/{action}?strategy=lock"), 503, "lock-timeout")

    slow = make_app(admin_token=ADMIN_TOKEN, enable_unsafe_strategy=True,
                    critical_section_delay_ms=400)
    assert client.put("/stock/raced", json={"quantity": 5}, headers=AUTH).status_code == 200
    answers = []
    order = threading.Thread(target=lambda: answers.append(slow.test_client().post(
        "/orders?strategy=lock", json={"sku": "raced"})))
    order.start()
    deadline = time.monotonic() + 5
    while not redis_client.exists(SkuKeys("raced").lock) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)  # the order holds the lock, has read the stock, and sleeps before its write
    assert client.put("/stock/raced", json={"quantity": 7}, headers=AUTH).status_code == 200
    order.join()
    assert_described(described, "/orders", answers[0], 503, "lock-lost")
    assert_books_balance(redis_client, {"held", "raced"})


# --- The stock invariant ---------------------------------------------------------------------


def skus_in_redis(client: redis.Redis) -> set[str]:
    """Every SKU with at least one key (keys of a SKU start with its tag ``{<sku>}``)."""
    return {key[1:key.index("}")] for key in client.scan_iter("{*}*", count=1000)}


def assert_books_balance(client: redis.Redis, skus: Iterable[str]) -> None:
    for sku in sorted(skus):
        assert SKU_PATTERN.fullmatch(sku), f"keys for {sku!r}, a SKU no request may name"
        try:
            assert_sku_balances(client, sku)
        except AssertionError as exc:
            raise AssertionError(f"SKU {sku!r}: {exc}") from None


def assert_sku_balances(client: redis.Redis, sku: str) -> None:
    """The SKU's counters never below 0 and adding up to all the stock ever supplied; the
    order records add up to them (confirmed to sold, reserved to reserved, the reserved ones
    are the holds) and to the per-customer counts (reserved and confirmed units)."""
    keys = SkuKeys(sku)
    stock, reserved, sold, supplied = (int(value or 0) for value in client.mget(
        [keys.stock, keys.reserved, keys.sold, keys.supplied]))
    assert stock >= 0, f"stock went below 0: {stock}"
    assert reserved >= 0, f"reserved went below 0: {reserved}"
    assert stock + reserved + sold == supplied, (
        f"oversold: stock {stock} + reserved {reserved} + sold {sold} != supplied {supplied}")
    orders = [client.hgetall(key) for key in client.scan_iter(keys.order("*"), count=1000)]
    units: dict[str, int] = {}
    held: set[str] = set()
    taken: dict[str, int] = {}  # customer id -> units reserved and confirmed
    for order in orders:
        status = order.get("status") or "confirmed"  # records from before statuses: confirmed
        units[status] = units.get(status, 0) + int(order["quantity"])
        if status == "reserved":
            held.add(order.get("order_id", ""))
        if status in ("reserved", "confirmed") and order.get("customer_id"):
            taken[order["customer_id"]] = taken.get(order["customer_id"], 0) + int(
                order["quantity"])
    assert units.get("confirmed", 0) == sold, (
        f"{len(orders)} order records do not add up to sold {sold}: confirmed ones hold "
        f"{units.get('confirmed', 0)}")
    assert units.get("reserved", 0) == reserved, (
        f"reserved order records hold {units.get('reserved', 0)} units, reserved is {reserved}")
    holds = set(client.zrange(keys.holds, 0, -1))
    assert holds == held, f"the holds {sorted(holds)} are not the reserved orders {sorted(held)}"
    counts = {customer: int(n) for customer, n in client.hgetall(keys.customers).items()}
    assert counts == taken, f"per-customer counts {counts} are not the records' {taken}"


def seed_reserved(client: redis.Redis, sku: str, stock: int, reserved: int, sold: int,
                  supplied: int, order_id: str, customer: str = "c-1") -> None:
    """Counters as given, and one reserved order of ``reserved`` units, held, for ``customer``
    (who is counted for it)."""
    keys = SkuKeys(sku)
    client.mset({keys.stock: stock, keys.reserved: reserved, keys.sold: sold,
                 keys.supplied: supplied})
    client.hset(keys.order(order_id), mapping={"order_id": order_id, "quantity": reserved,
                                               "status": "reserved", "customer_id": customer})
    client.zadd(keys.holds, {order_id: 1})
    client.hset(keys.customers, customer, reserved)


def test_unbalanced_books_are_found(redis_client):
    redis_client.mset({"{ok}:stock": 3, "{ok}:sold": 2, "{ok}:supplied": 5})
    redis_client.hset("{ok}:order:ok~00000000000000000001", mapping={"quantity": 2})
    assert skus_in_redis(redis_client) == {"ok"}
    assert_books_balance(redis_client, {"ok"})

    redis_client.mset({"{lost}:stock": 3, "{lost}:sold": 1, "{lost}:supplied": 5})
    redis_client.hset("{lost}:order:lost~00000000000000000001", mapping={"quantity": 1})
    redis_client.set("{below}:stock", -1)  # no other key: still found, and still wrong
    assert skus_in_redis(redis_client) == {"ok", "lost", "below"}
    with pytest.raises(AssertionError, match=r"'below': stock went below 0: -1"):
        assert_books_balance(redis_client, skus_in_redis(redis_client))
    with pytest.raises(AssertionError, match=r"'lost': oversold: stock 3 \+ reserved 0 \+ "
                                             r"sold 1 != supplied 5"):
        assert_books_balance(redis_client, {"ok", "lost"})
    redis_client.mset({"{unrecorded}:stock": 3, "{unrecorded}:sold": 2,
                       "{unrecorded}:supplied": 5})
    with pytest.raises(AssertionError, match="0 order records do not add up to sold 2"):
        assert_books_balance(redis_client, {"unrecorded"})

    # Reserved units count towards supplied, and are the reserved orders' and the holds'.
    seed_reserved(redis_client, "held", 3, 2, 0, 5, "held~00000000000000000001")
    redis_client.hset("{held}:order:held~00000000000000000002",  # an expired one: off the books
                      mapping={"order_id": "held~00000000000000000002", "quantity": 4,
                               "status": "expired", "customer_id": "c-1"})
    assert_books_balance(redis_client, {"ok", "held"})
    seed_reserved(redis_client, "leaked", 3, 2, 0, 6, "leaked~00000000000000000001")
    with pytest.raises(AssertionError, match=r"oversold: stock 3 \+ reserved 2 \+ sold 0 != "
                                             r"supplied 6"):
        assert_books_balance(redis_client, {"leaked"})
    redis_client.set("{negative}:reserved", -1)
    with pytest.raises(AssertionError, match="reserved went below 0: -1"):
        assert_books_balance(redis_client, {"negative"})
    seed_reserved(redis_client, "unheld", 3, 2, 0, 5, "unheld~00000000000000000001")
    redis_client.delete(SkuKeys("unheld").holds)
    with pytest.raises(AssertionError, match=r"the holds \[\] are not the reserved orders"):
        assert_books_balance(redis_client, {"unheld"})
    seed_reserved(redis_client, "stale", 3, 2, 0, 5, "stale~00000000000000000001")
    redis_client.hset("{stale}:order:stale~00000000000000000001", "status", "cancelled")
    with pytest.raises(AssertionError, match="reserved order records hold 0 units, reserved "
                                             "is 2"):
        assert_books_balance(redis_client, {"stale"})
    seed_reserved(redis_client, "miscounted", 3, 2, 0, 5, "miscounted~00000000000000000001")
    redis_client.hset(SkuKeys("miscounted").customers, "c-1", 3)
    with pytest.raises(AssertionError, match=r"per-customer counts \{'c-1': 3\} are not the "
                                             r"records' \{'c-1': 2\}"):
        assert_books_balance(redis_client, {"miscounted"})


# --- Schemathesis ----------------------------------------------------------------------------

FUZZ_CONFIG = {
    "seed": 20261124,  # with `deterministic`, the same cases on every run and machine
    "generation": {"mode": "all", "max-examples": 30, "deterministic": True, "database": "none"},
    "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
    "auth": {"openapi": {"bearerAuth": {"bearer": ADMIN_TOKEN}}},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
               "fuzzing": {"enabled": True}},
}


def order_body(case: schemathesis.Case) -> dict[str, Any]:
    return case.body if isinstance(case.body, dict) else {}


def order_fingerprint(case: schemathesis.Case) -> tuple[object, object]:
    """The order's SKU, and its quantity (default filled in), customer_id and hold_s: an
    Idempotency-Key is bound, per SKU, to those of its first order of that SKU."""
    body = order_body(case)
    return body.get("sku", DEFAULT_SKU), (body.get("quantity", 1), body.get("customer_id"),
                                          body.get("hold_s"))


def request_skus(case: schemathesis.Case) -> set[str]:
    """The SKUs a request could change: the one in its path (an order id names its SKU) or
    body, and DEFAULT_SKU."""
    parameters = case.path_parameters or {}
    order_id = parameters.get("order_id")
    named = [DEFAULT_SKU, parameters.get("sku"), order_fingerprint(case)[0],
             sku_of_order(order_id) if isinstance(order_id, str) else None]
    return {sku for sku in named if isinstance(sku, str) and SKU_PATTERN.fullmatch(sku)}


class AppUnderTest:
    """A WSGI entry point the schema is bound to at import; each test points it at its app."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        assert self.app is not None, "no app under test"
        return self.app(environ, start_response)


APP_UNDER_TEST = AppUnderTest()


@pytest.fixture
def fuzzed_app(make_app, redis_client) -> Iterator[Flask]:
    """The service as deployed (admin token set, unsafe strategy off) on an empty Redis, with
    stock to sell and orders to confirm and cancel (SEED_ORDERS); after the run, the books of
    every SKU in Redis must balance."""
    app = make_app(admin_token=ADMIN_TOKEN, enable_unsafe_strategy=False)
    client = app.test_client()
    for sku, quantity in {**SEED_STOCK, SEED_SKU: 100}.items():
        response = client.put(f"/stock/{sku}", json={"quantity": quantity},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200, response.get_data(as_text=True)
    app.extensions["seeded_orders"] = seed_orders(client)
    # The "expired" ones (a hold of 1 s) are due by then: to_seeded_order waits for it.
    app.extensions["seeded_due"] = time.monotonic() + 1.05
    APP_UNDER_TEST.app = app
    yield app
    APP_UNDER_TEST.app = None
    assert_books_balance(redis_client, skus_in_redis(redis_client))


def seed_orders(client: FlaskClient) -> list[str]:
    """SEED_ORDERS placed on SEED_SKU, the ones to expire first; their ids."""
    seeded = []
    for status, count in SEED_ORDERS.items():
        for n in range(count):
            body: dict[str, Any] = {"sku": SEED_SKU, "customer_id": f"seed-{n % 3}"}
            if status != "confirmed":
                body["hold_s"] = 1 if status == "expired" else 3600
            response = client.post("/orders", json=body)
            assert response.status_code == 201, response.get_data(as_text=True)
            order_id = response.get_json()["order_id"]
            if status == "cancelled":
                assert client.post(f"/orders/{order_id}/cancel").status_code == 200
            seeded.append(order_id)
    return seeded


# The description as kept in the repository (test_openapi_json_serves_the_file shows that the
# service serves exactly that), every call going to the app under test in-process, through
# WSGI. One test per operation, each on an empty Redis, each running schemathesis's examples,
# coverage and fuzzing phases with positive and negative cases.
fuzzed_schema = schemathesis.openapi.from_path(openapi.DESCRIPTION_FILE,
                                               config=schemathesis.Config.from_dict(FUZZ_CONFIG))
fuzzed_schema.app = APP_UNDER_TEST


FUZZ_SETTINGS = settings(deadline=None, suppress_health_check=[  # app and Redis live on
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much,
    HealthCheck.data_too_large])


@fuzzed_schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms_under_fuzzing(case, fuzzed_app, redis_client):
    to_seeded_order(case, fuzzed_app)
    check_answer(case, case.call(), fuzzed_app, redis_client)


SETTLE_PATHS = ("/orders/{order_id}/confirm", "/orders/{order_id}/cancel")


def to_seeded_order(case: schemathesis.Case, app: Flask) -> None:
    """Point a confirm or cancel of a well-formed order id at one of the seeded orders, most
    of the time (which one, and whether, follows from the id generated): unknown ids only
    ever get a 404. Other cases, and malformed ids, are sent as generated."""
    order_id = (case.path_parameters or {}).get("order_id")
    if case.path not in SETTLE_PATHS or not isinstance(order_id, str) \
            or not ORDER_ID_PATTERN.fullmatch(order_id):
        return
    seeded = app.extensions["seeded_orders"]
    pick = int(order_id[-20:], 16) % (len(seeded) + 1)  # one id in len + 1 left as it is
    if pick < len(seeded):
        case.path_parameters["order_id"] = seeded[pick]
    due = app.extensions.pop("seeded_due", None)  # once: until the expired ones are due
    if due is not None:
        time.sleep(max(0.0, due - time.monotonic()))


def test_workflows_conform(fuzzed_app, redis_client):
    """Sequences of calls along the description's links (an order, then reading it back,
    confirming or cancelling it, and reading its SKU's stock; a confirm or cancel, then the
    other one, or reading the order or its stock; a stock change, then reading it or ordering
    from it): schemathesis's stateful checks on top."""

    class Workflow(fuzzed_schema.as_state_machine()):
        def validate_response(self, response, case, additional_checks=None, **kwargs):
            check_answer(case, response, fuzzed_app, redis_client, recorder=self.recorder)

    Workflow.run(settings=settings(FUZZ_SETTINGS, max_examples=15, stateful_step_count=8,
                                   derandomize=True, database=None))


def check_answer(case: schemathesis.Case, response: schemathesis.Response, app: Flask,
                 redis_client: redis.Redis, **validation: Any) -> None:
    """Every check of schemathesis on the answer, then the books of the SKUs it named."""
    # (key, sku) -> the order it was first sent with (order_fingerprint): a key is scoped to
    # its SKU.
    bound: dict[tuple[str, object], object] = app.extensions.setdefault("keys_sent", {})
    excluded = []
    key = (case.headers or {}).get("Idempotency-Key")
    if problem_type(response) == "/problems/idempotency-key-reused":
        # A schema-valid order refused for what an earlier request did: only right if that
        # request bound the key to another order. Every other check still applies.
        sku, fingerprint = order_fingerprint(case)
        assert (key, sku) in bound and bound[key, sku] != fingerprint, (key, sku, bound)
        excluded = [schemathesis.checks.positive_data_acceptance]
    elif problem_type(response) == "/problems/customer-required":
        # Likewise refused for what an earlier request did: only right if it gave the SKU a
        # per-customer limit, and this order names no customer.
        sku = order_fingerprint(case)[0]
        assert isinstance(sku, str) and redis_client.exists(SkuKeys(sku).limit), (sku, case.body)
        assert "customer_id" not in order_body(case), case.body
        excluded = [schemathesis.checks.positive_data_acceptance]
    elif integral_float_refused(case, response):
        # JSON Schema's integer admits 5.0; the service refuses it (see the report).
        excluded = [schemathesis.checks.positive_data_acceptance]
    elif case.path == "/orders" and key is not None and response.status_code in (201, 409, 503):
        sku, fingerprint = order_fingerprint(case)
        bound.setdefault((key, sku), fingerprint)
    case.validate_response(response, excluded_checks=excluded, **validation)
    assert_books_balance(redis_client, request_skus(case))


INTEGER_FIELDS = ("quantity", "hold_s", "per_customer_limit")


def integral_float_refused(case: schemathesis.Case, response: schemathesis.Response) -> bool:
    """An integer field (`quantity`, `hold_s`, `per_customer_limit`) sent as a JSON number with
    a fraction or exponent but an integral value (5.0, 1e3), which JSON Schema counts as an
    integer, refused as not one."""
    if problem_type(response) != "/problems/invalid-request":
        return False
    detail = response.json()["detail"]
    return any(isinstance(value, float) and value.is_integer()
               and detail.startswith(f"{name} must be an integer")
               for name, value in order_body(case).items() if name in INTEGER_FIELDS)


def problem_type(response: schemathesis.Response) -> str | None:
    if response.headers.get("content-type") != ["application/problem+json"]:
        return None
    return response.json()["type"]


def test_fuzz_checks_fail_on_wrong_answers(make_app, monkeypatch):
    """The checks the fuzz test runs fail on answers the description does not allow, and on
    a server error."""
    app = make_app()
    doctored = copy.deepcopy(DOCUMENT)
    doctored["components"]["schemas"]["Stock"]["required"].append("price")
    del doctored["paths"]["/stock/{sku}"]["get"]["responses"]["422"]
    schema = schemathesis.openapi.from_dict(doctored)
    schema.app = app
    get_stock = schema["/stock/{sku}"]["GET"]
    with pytest.raises(FailureGroup, match="price"):
        get_stock.Case(path_parameters={"sku": "shoe-42"}).call_and_validate()
    with pytest.raises(FailureGroup, match="422"):
        get_stock.Case(path_parameters={"sku": "no spaces"}).call_and_validate()

    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
    schema.app = app
    get_stock = schema["/stock/{sku}"]["GET"]
    for sku in ("shoe-42", "no spaces"):  # the same answers, as described
        get_stock.Case(path_parameters={"sku": sku}).call_and_validate()
    monkeypatch.setattr(app.extensions["order_service"], "stock", lambda sku: 1 / 0)
    with pytest.raises(FailureGroup, match="Server error"):
        get_stock.Case(path_parameters={"sku": "shoe-42"}).call_and_validate()


def test_fuzz_checks_fail_on_wrong_order_states(make_app):
    """The same for the orders' new fields: a status, or a problem member, the description
    does not allow."""
    app = make_app()
    client = app.test_client()
    assert client.put("/stock/boot-7", json={"quantity": 5}).status_code == 200
    order_id = client.post("/orders", json={"sku": "boot-7", "hold_s": 600}).get_json()["order_id"]
    doctored = copy.deepcopy(DOCUMENT)
    doctored["components"]["schemas"]["OrderStatus"]["enum"].remove("cancelled")
    conflict = doctored["components"]["responses"]["OrderStateConflict"]
    conflict["content"]["application/problem+json"]["schema"]["allOf"][2]["properties"][
        "order_status"]["enum"].remove("cancelled")
    schema = schemathesis.openapi.from_dict(doctored)
    schema.app = app
    cancel = schema["/orders/{order_id}/cancel"]["POST"]
    confirm = schema["/orders/{order_id}/confirm"]["POST"]
    with pytest.raises(FailureGroup, match="cancelled"):
        cancel.Case(path_parameters={"order_id": order_id}).call_and_validate()
    with pytest.raises(FailureGroup, match="cancelled"):
        confirm.Case(path_parameters={"order_id": order_id}).call_and_validate()

    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
    schema.app = app
    for action in ("cancel", "confirm"):  # the same answers (200 again, 409), as described
        schema[f"/orders/{{order_id}}/{action}"]["POST"].Case(
            path_parameters={"order_id": order_id}).call_and_validate()


def test_request_skus():
    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
    post, put = schema["/orders"]["POST"], schema["/stock/{sku}"]["PUT"]
    assert request_skus(post.Case(body={"sku": "shoe-42"})) == {"shoe-42", DEFAULT_SKU}
    assert request_skus(post.Case(body={"sku": "bad sku"})) == {DEFAULT_SKU}
    assert request_skus(put.Case(path_parameters={"sku": "a.b"}, body={})) == {"a.b", DEFAULT_SKU}
    confirm = schema["/orders/{order_id}/confirm"]["POST"]
    assert request_skus(confirm.Case(path_parameters={"order_id": "a.b~0123456789abcdef0123"})
                        ) == {"a.b", DEFAULT_SKU}
    assert request_skus(confirm.Case(path_parameters={"order_id": "a.b"})) == {DEFAULT_SKU}


def test_order_fingerprint_and_seeded_orders(make_app):
    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
    post = schema["/orders"]["POST"]
    assert order_fingerprint(post.Case()) == (DEFAULT_SKU, (1, None, None))
    assert order_fingerprint(post.Case(body={"sku": "a", "quantity": 2, "customer_id": "c",
                                             "hold_s": 5})) == ("a", (2, "c", 5))
    app = make_app()
    app.extensions["seeded_orders"] = ["s~00000000000000000001", "s~00000000000000000002"]
    cancel = schema["/orders/{order_id}/cancel"]["POST"]
    picked = []
    for order_id in ("x~00000000000000000000", "x~00000000000000000001",
                     "x~00000000000000000002", "not an id"):
        case = cancel.Case(path_parameters={"order_id": order_id})
        to_seeded_order(case, app)
        picked.append(case.path_parameters["order_id"])
    assert picked == ["s~00000000000000000001", "s~00000000000000000002",
                      "x~00000000000000000002", "not an id"]
    case = schema["/orders/{order_id}"]["GET"].Case(
        path_parameters={"order_id": "x~00000000000000000000"})
    to_seeded_order(case, app)  # only confirms and cancels are pointed at seeded orders
    assert case.path_parameters["order_id"] == "x~00000000000000000000"

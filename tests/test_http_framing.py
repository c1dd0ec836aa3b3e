"""Malformed HTTP framing through a real gunicorn: raw-socket requests with broken chunked
bodies, a body shorter than its Content-Length, undecodable query strings and header values.

Each is refused with a 4xx (400 for framing) and changes nothing in Redis, with no ERROR or
traceback in the replica's log; after a broken framing the connection is not reused (where
the next request would start is unknown). Flask's test client has no chunked parser, so only
a real server shows these.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from harness.books import Books
from harness.replicas import LocalReplicas, Replica

pytestmark = pytest.mark.slow

SKU = "framing"
TOKEN = "framing-admin-token"
ORDER = b'{"sku": "framing"}'
STOCK = b'{"quantity": 99}'
PROBLEM = "application/problem+json"
FOLLOW_UP = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def replica() -> Iterator[tuple[Replica, redis.Redis]]:
    with LocalReplicas(replicas=1, workers=1, env={"ADMIN_TOKEN": TOKEN}) as cluster, \
            cluster.redis_client(decode_responses=True) as client:
        yield cluster.replicas[0], client


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    after: bytes  # whatever the server sent after the first response (another response?)


def _read_reply(sock: socket.socket, follow_up: bytes | None) -> Reply:
    """The first response on ``sock``; then, if ``follow_up``, send it and read to the end."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"connection closed before a response: {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        piece = sock.recv(65536)
        assert piece, "connection closed inside the response body"
        rest += piece
    body, after = rest[:length], rest[length:]
    if follow_up is not None:
        try:
            sock.sendall(follow_up)
            while piece := sock.recv(65536):
                after += piece
        except (ConnectionResetError, BrokenPipeError):  # closed with our bytes unread
            pass
    return Reply(int(status_line.split()[1]), headers, body, after)


def exchange(replica: Replica, raw: bytes, half_close: bool = False) -> Reply:
    """Send ``raw`` as is; with ``half_close``, then end our side (a client that stops
    sending); else send a well-formed follow-up request, to see whether it is served."""
    with socket.create_connection(("127.0.0.1", replica.port), timeout=10) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return _read_reply(sock, None if half_close else FOLLOW_UP)


def request(method: str, target: str, body: bytes = b"", framing: str = "",
            headers: tuple[bytes, ...] = ()) -> bytes:
    """A raw HTTP/1.1 request; ``framing`` is the Content-Length or Transfer-Encoding line
    (with the body already framed), or empty for a Content-Length that matches ``body``."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1",
             b"Content-Type: application/json", *headers]
    if method == "PUT":
        lines.append(f"Authorization: Bearer {TOKEN}".encode())
    lines.append(framing.encode() if framing else b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(size_line: bytes, data: bytes, tail: bytes) -> tuple[bytes, str]:
    return size_line + b"\r\n" + data + tail, "Transfer-Encoding: chunked"


def _hex(data: bytes) -> bytes:
    return b"%x" % len(data)


# (id, method, target, body, framing, half_close): each a broken framing of a body that
# would otherwise be a valid order, stock change or confirm.
TARGETS = [("POST", "/orders", ORDER), ("PUT", f"/stock/{SKU}", STOCK),
           # no such order (well framed: a 404): the body is read, and refused, first
           ("POST", f"/orders/{SKU}~{'0' * 20}/confirm", b"{}")]
FRAMINGS = [
    ("chunk-size-not-hex", lambda d: chunked(b"zz", d, b"\r\n0\r\n\r\n"), False),
    ("chunk-size-empty", lambda d: chunked(b"", d, b"\r\n0\r\n\r\n"), False),
    ("chunk-without-crlf", lambda d: chunked(_hex(d), d, b"XX0\r\n\r\n"), False),
    ("chunk-extension-invalid", lambda d: chunked(_hex(d) + b";=x", d, b"\r\n0\r\n\r\n"),
     False),
    ("chunk-extension-bare-cr", lambda d: chunked(_hex(d) + b";a\rb", d, b"\r\n0\r\n\r\n"),
     False),
    ("chunk-shorter-than-its-size", lambda d: chunked(b"400", d, b""), True),
    ("no-last-chunk", lambda d: chunked(_hex(d), d, b"\r\n"), True),
    ("last-chunk-without-final-crlf", lambda d: chunked(_hex(d), d, b"\r\n0\r\n"), True),
    ("body-shorter-than-content-length",
     lambda d: (d, f"Content-Length: {len(d) + 20}"), True),
]


@pytest.fixture
def unchanged(replica: tuple[Replica, redis.Redis]) -> Iterator[Replica]:
    """Stock 5 of SKU; after the test: Redis as it was, no ERROR or traceback logged."""
    server, client = replica
    client.flushall()
    reply = exchange(server, request("PUT", f"/stock/{SKU}", b'{"quantity": 5}'))
    assert reply.status == 200, reply
    before = snapshot(client)
    log_start = server.log_path.stat().st_size
    yield server
    assert snapshot(client) == before
    with open(server.log_path, "rb") as log:
        log.seek(log_start)
        written = log.read().decode("utf-8", "replace")
    assert "Traceback" not in written and " ERROR " not in written \
        and "[ERROR]" not in written, written


def snapshot(client: redis.Redis) -> dict[str, object]:
    """Every key and its value (the test's keys are strings and hashes)."""
    state: dict[str, object] = {}
    for key in sorted(client.scan_iter(count=1000)):
        state[key] = client.hgetall(key) if client.type(key) == "hash" else client.get(key)
    return state


def assert_problem(reply: Reply, status: int) -> dict[str, object]:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == PROBLEM, reply
    problem = json.loads(reply.body)
    assert problem["status"] == status and problem["detail"], problem
    return problem


@pytest.mark.parametrize("method,target,data", TARGETS, ids=["order", "stock", "confirm"])
@pytest.mark.parametrize("name,frame,half_close", FRAMINGS, ids=[f[0] for f in FRAMINGS])
def test_broken_body_framing_is_a_400_and_the_connection_closes(
        unchanged, method, target, data, name, frame, half_close):
    body, framing = frame(data)
    reply = exchange(unchanged, request(method, target, body, framing), half_close)
    assert_problem(reply, 400)
    # Not another response: the rest of our bytes, or the follow-up, were not served.
    assert b"HTTP/1.1" not in reply.after, reply


def test_a_well_framed_chunked_order_is_served(replica):
    """The control: the same body, framed right, is served, and the connection kept."""
    server, client = replica
    client.flushall()
    exchange(server, request("PUT", f"/stock/{SKU}", b'{"quantity": 5}'))
    body, framing = chunked(_hex(ORDER), ORDER, b"\r\n0\r\n\r\n")
    reply = exchange(server, request("POST", "/orders", body, framing))
    assert reply.status == 201, reply
    assert reply.after.startswith(b"HTTP/1.1 200 "), reply  # the follow-up, same connection
    assert Books(client, SKU).sold == 1


@pytest.mark.parametrize("raw", [
    request("POST", "/orders", ORDER, "Content-Length: abc"),
    request("POST", "/orders", ORDER, "Content-Length: -18"),
    request("POST", "/orders", ORDER, f"Content-Length: {len(ORDER)}\r\n"
                                      f"Content-Length: {len(ORDER) + 1}"),
    request("POST", "/orders", *chunked(_hex(ORDER), ORDER, b"\r\n0\r\n\r\n")[:1],
            f"Transfer-Encoding: chunked\r\nContent-Length: {len(ORDER)}"),
], ids=["not-a-number", "negative", "twice", "with-chunked"])
def test_bad_content_length_never_reaches_the_service(unchanged, raw):
    """gunicorn's parser refuses these before the app sees them: its own 400 (not
    problem+json: the service never ran), nothing changed, nothing served after."""
    reply = exchange(unchanged, raw)
    assert reply.status == 400, reply
    assert b"HTTP/1.1" not in reply.after, reply


@pytest.mark.parametrize("method,target,headers,status", [
    ("POST", "/orders?strategy=%ff", (), 400),
    ("POST", "/orders?strategy=lua%ff%fe", (), 400),
    ("PUT", "/stock/%ff", (), 422),
    ("PUT", "/stock/caf%c3%a9", (), 422),
    ("GET", "/orders/%ff~00", (), 404),
    ("POST", "/orders", (b"Idempotency-Key: caf\xc3\xa9",), 400),
    ("POST", "/orders", (b"Idempotency-Key: \xff\xfe",), 400),
    ("POST", "/orders", (b"Content-Type: application/\xffjson",), 415),
    ("PUT", f"/stock/{SKU}", (b"Authorization: Bearer \xff",), 403),
], ids=["strategy-ff", "strategy-lua-fffe", "sku-ff", "sku-utf8", "order-id-ff",
        "idempotency-key-utf8", "idempotency-key-ff", "content-type-ff", "token-ff"])
def test_undecodable_query_and_headers_are_refused(unchanged, method, target, headers,
                                                   status):
    body = ORDER if method == "POST" else STOCK if method == "PUT" else b""
    raw = request(method, target, body, headers=headers)
    if headers and headers[0].startswith((b"Content-Type", b"Authorization")):
        name = headers[0].split(b":")[0]  # replace the default one, not add a second
        raw = b"\r\n".join(line for line in raw.split(b"\r\n")
                           if not line.startswith(name + b": ") or line in headers)
    assert_problem(exchange(unchanged, raw), status)

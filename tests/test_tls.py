"""rediss:// URLs: TLS to Redis, with the certificate settings of the URL's query string.

The redis-server the tests use is built without TLS, so a TLS-terminating proxy of ours
(benchmarks/proxy.py) stands in front of it, with certificates from a throw-away CA (trustme).
The service's side is the real one: redis-py's SSL connection, configured from REDIS_URL.
"""

from __future__ import annotations

import ssl

import pytest
import trustme

from harness.proxy import FlakyProxy
from service import create_app

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_proxy(upstream_port: int, ca: trustme.CA, client_ca: trustme.CA | None = None):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if client_ca is not None:  # mutual TLS: the service must show a certificate of client_ca
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return FlakyProxy(upstream_port, ssl_context=context)


def app_at(url: str):
    return create_app({"redis_url": url, "replica_id": "r", "redis_timeout_ms": 500,
                       "admin_token": "t"}).test_client()


def order(client, sku="tls"):
    auth = {"Authorization": "Bearer t"}
    return (client.put(f"/stock/{sku}", json={"quantity": 2}, headers=auth).status_code,
            client.post("/orders", json={"sku": sku}).status_code)


def test_rediss_with_a_verified_server_certificate(redis_server, redis_client, ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with tls_proxy(redis_server.port, ca) as proxy:
        client = app_at(f"{proxy.url}?ssl_ca_certs={ca_file}&ssl_cert_reqs=required")
        assert client.get("/readyz").status_code == 200
        assert order(client) == (200, 201)
    assert redis_client.get("{tls}:sold") == "1"  # through TLS into the real Redis


def test_a_certificate_from_another_ca_is_refused(redis_server, redis_client, ca, tmp_path):
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    with tls_proxy(redis_server.port, ca) as proxy:
        client = app_at(f"{proxy.url}?ssl_ca_certs={stranger}&ssl_cert_reqs=required")
        answer = client.post("/orders", json={"sku": "tls"})
        assert answer.status_code == 503 and answer.content_type == PROBLEM
        assert client.get("/readyz").status_code == 503
    assert redis_client.get("{tls}:supplied") is None


def test_plain_redis_to_a_tls_port_answers_503(redis_server, ca):
    with tls_proxy(redis_server.port, ca) as proxy:
        client = app_at(proxy.url.replace("rediss://", "redis://"))
        assert client.get("/readyz").status_code == 503


def test_mutual_tls_with_a_client_certificate(redis_server, redis_client, ca, tmp_path):
    client_ca = trustme.CA()
    ca_file, cert_file, key_file = (tmp_path / name for name in ("ca.pem", "c.pem", "k.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    issued = client_ca.issue_cert("order-service")
    issued.cert_chain_pems[0].write_to_path(str(cert_file))
    issued.private_key_pem.write_to_path(str(key_file))
    with tls_proxy(redis_server.port, ca, client_ca=client_ca) as proxy:
        base = f"{proxy.url}?ssl_ca_certs={ca_file}&ssl_cert_reqs=required"
        without = app_at(base)
        assert without.get("/readyz").status_code == 503
        with_cert = app_at(f"{base}&ssl_certfile={cert_file}&ssl_keyfile={key_file}")
        assert order(with_cert, "mtls") == (200, 201)
    assert redis_client.get("{mtls}:sold") == "1"

"""Access control: the admin token on stock changes, and Redis passwords and ACL users.

The lock, API and multi-replica tests also run as an ACL user (the "acl" backend, see
tests/backends.py); these tests show that the credentials are really checked.
"""

from __future__ import annotations

import logging

import pytest
import redis

from service import api, create_app

PROBLEM = "application/problem+json"
TOKEN = "s3cret-admin-token"


@pytest.fixture
def guarded(make_app):
    return make_app(admin_token=TOKEN).test_client()


def put_stock(client, headers=None, quantity=5):
    return client.put("/stock/s", json={"quantity": quantity}, headers=headers or {})


def test_without_a_token_stock_changes_are_refused_and_change_nothing(guarded, books):
    answer = put_stock(guarded)
    assert answer.status_code == 401 and answer.content_type == PROBLEM
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert put_stock(guarded, {"Authorization": "Basic " + TOKEN}).status_code == 401
    assert books("s").supplied == 0


def test_a_wrong_token_is_forbidden(guarded, books):
    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"):
        answer = put_stock(guarded, {"Authorization": wrong})
        assert answer.status_code == 403 and answer.content_type == PROBLEM, wrong
    assert books("s").supplied == 0


def test_the_right_token_sets_the_stock(guarded, books):
    assert put_stock(guarded, {"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert books("s").stock == 5
    # Orders and reads need no token.
    assert guarded.post("/orders", json={"sku": "s"}).status_code == 201
    assert guarded.get("/stock/s").status_code == 200


def test_the_token_is_compared_in_constant_time(guarded, monkeypatch):
    compared = []
    real = api.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api.hmac, "compare_digest", spy)
    put_stock(guarded, {"Authorization": "Bearer guess"})
    assert compared == [(b"guess", TOKEN.encode())]


def test_without_admin_token_stock_is_open_and_start_up_warns(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="service"):
        client = make_app(admin_token="").test_client()
    assert any("ADMIN_TOKEN is not set" in r.getMessage() for r in caplog.records)
    assert put_stock(client).status_code == 200


def test_with_admin_token_start_up_does_not_warn(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="service"):
        make_app(admin_token=TOKEN)
    assert not any("ADMIN_TOKEN" in r.getMessage() for r in caplog.records)


# Redis credentials: a server whose default user needs a password, and an ACL user
# ("orders") without the dangerous commands (see harness/redis_server.py).

def app_on(**settings):
    return create_app({"replica_id": "r", "redis_timeout_ms": 300, **settings}).test_client()


def order_works(client):
    return (put_stock(client).status_code, client.post("/orders", json={"sku": "s"}).status_code)


def test_credentials_from_redis_password(acl_redis):
    client = app_on(redis_url=acl_redis.url, redis_password="orders-secret")
    assert order_works(client) == (200, 201)


def test_credentials_in_the_url(acl_redis):
    url = f"redis://orders:orders-secret@127.0.0.1:{acl_redis.port}/0"
    assert order_works(app_on(redis_url=url)) == (200, 201)


def test_a_password_in_the_url_wins_over_redis_password(acl_redis):
    url = f"redis://orders:orders-secret@127.0.0.1:{acl_redis.port}/0"
    assert order_works(app_on(redis_url=url, redis_password="wrong")) == (200, 201)


@pytest.mark.parametrize("password", ["", "wrong"])
def test_missing_or_wrong_credentials_answer_503_and_change_nothing(acl_redis, password):
    client = app_on(redis_url=acl_redis.url, redis_password=password)
    with acl_redis.admin(decode_responses=True) as admin:
        before = admin.get("{s}:supplied")
        assert client.get("/readyz").status_code == 503
        answer = put_stock(client)
        assert answer.status_code == 503 and answer.content_type == PROBLEM
        assert admin.get("{s}:supplied") == before


def test_the_acl_user_really_lacks_the_dangerous_commands(acl_redis):
    with acl_redis.client() as client:
        client.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command("DEBUG", "SLEEP", 0)


@pytest.mark.slow
def test_the_benchmark_sends_the_admin_token_from_its_environment(monkeypatch):
    """Replicas with ADMIN_TOKEN: the seed run (as the in-cluster Job runs it) sets its stock
    with the token from its own environment, and cannot without it."""
    from harness.experiment import run_seed
    from harness.replicas import LocalReplicas

    with LocalReplicas(replicas=2, env={"ADMIN_TOKEN": TOKEN}) as cluster:
        monkeypatch.delenv("ADMIN_TOKEN", raising=False)
        with pytest.raises(RuntimeError, match="401"):
            run_seed(cluster.urls, "lua", sku="guarded-open")
        monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
        run = run_seed(cluster.urls, "lua", sku="guarded")
        assert run.statuses == {201: 10, 409: 30} and run.failures() == []

"""Settings: each variable's rejection path, with a ConfigError that names the variable, and
an app that refuses to start on any of them (before it connects to Redis)."""

from __future__ import annotations

import pytest

from service import create_app
from service.config import ConfigError, Settings

# (variable, a value it refuses, a value it takes): every parser and rule in service/config.py.
REFUSED = [
    ("LOCK_TTL_MS", "soon", "5000"),
    ("LOCK_TTL_MS", "0", "100"),
    ("LOCK_TTL_MS", "99", "100"),  # the watchdog would renew every 33 ms or less
    ("LOCK_TTL_MS", "1", "150"),
    ("LOCK_WAIT_MS", "-1", "0"),
    ("LOCK_WAITERS", "-1", "auto"),
    ("LOCK_WAITERS", "many", "14"),
    ("LOCK_WAIT_MS", "2s", "2000"),
    ("REDIS_TIMEOUT_MS", "0", "1"),
    ("REDIS_TIMEOUT_MS", "1.5", "1000"),
    ("IDEMPOTENCY_TTL_S", "-5", "60"),
    ("IDEMPOTENCY_TTL_S", "1d", "86400"),
    ("CRITICAL_SECTION_DELAY_MS", "-1", "0"),
    ("CRITICAL_SECTION_DELAY_MS", "ten", "10"),
    ("ENABLE_UNSAFE_STRATEGY", "maybe", "yes"),
    ("LOCK_RENEWAL", "2", "off"),
    ("DISABLE_FENCING", "nope", "0"),
    ("REDIS_CLUSTER", "cluster", "1"),
    ("REDIS_SENTINELS", "127.0.0.1", "127.0.0.1:26379"),
    ("REDIS_SENTINELS", "a:26379,b:99999", "a:26379, [::1]:26380"),
    ("REDIS_SENTINELS", ":26379", "sentinel-0.sentinel:26379"),
    ("REDIS_SENTINEL_MASTER", " ", "mymaster"),
    ("REDIS_SENTINEL_MASTER", "my master", "orders"),
    ("REDIS_WAIT_REPLICAS", "-1", "1"),
    ("REDIS_WAIT_REPLICAS", "all", "0"),
    ("REDIS_WAIT_TIMEOUT_MS", "0", "500"),  # WAIT with timeout 0 blocks for ever
    ("METRICS_ENABLED", "enabled", "true"),
    ("LOG_FORMAT", "xml", "JSON"),
    ("REDIS_CLIENT_NAME", "has space", "replica-1"),
    ("REDIS_CLIENT_NAME", "caf\xe9", "cafe"),
    ("ORDER_STRATEGY", "none", "lock"),  # the unsafe control is never the default
    ("ORDER_STRATEGY", "fast", "lua"),
    ("DEFAULT_SKU", "b@d", "shoe-42"),
    ("DEFAULT_SKU", "{tag}", "a.b:c_d-e"),
    ("DEFAULT_SKU", "a" * 65, "a" * 64),
    ("REPLICA_ID", "has space", "replica-1"),
    ("REPLICA_ID", "a/b", "pod-7f9c.example"),  # "/" separates a lock token's replica
    ("REPLICA_ID", "caf\xe9", "cafe"),
    ("REPLICA_ID", "tab\there", "tab-here"),
    ("REPLICA_ID", "r" * 254, "r" * 253),
]
IDS = [f"{name}={refused[:12]!r}" for name, refused, _ in REFUSED]


@pytest.mark.parametrize("name,refused,taken", REFUSED, ids=IDS)
def test_each_setting_refuses_a_bad_value_by_name(name, refused, taken):
    Settings.from_env({name: taken})  # the control: the variable itself is read fine
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: refused})
    assert str(error.value).startswith(name), error.value


def test_the_refused_values_are_refused_as_overrides_too():
    """Settings the tests pass to create_app are checked like the environment's."""
    for field, value in [("default_sku", "b@d"), ("replica_id", "a b"), ("lock_ttl_ms", 50)]:
        with pytest.raises(ConfigError, match=field.upper()):
            Settings.from_env({}, **{field: value})


def test_an_unset_replica_id_is_the_host_name():
    settings = Settings.from_env({"REPLICA_ID": ""})
    assert settings.replica_id and "/" not in settings.replica_id


@pytest.mark.parametrize("name,refused,taken", REFUSED, ids=IDS)
def test_the_app_does_not_start_with_a_bad_setting(monkeypatch, name, refused, taken):
    # Redis on a port nobody listens on: the settings must stop the start-up before it.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv(name, refused)
    with pytest.raises(ConfigError, match=f"^{name}"):
        create_app()


def test_lock_waiters_auto_is_left_to_the_worker():
    assert Settings.from_env({}).lock_waiters == 0  # no cap unless asked for
    assert Settings.from_env({"LOCK_WAITERS": "auto"}).lock_waiters is None
    assert Settings.from_env({"LOCK_WAITERS": "14"}).lock_waiters == 14


def test_the_wait_fits_in_the_redis_timeout_and_the_lease():
    fits = {"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "500",
            "REDIS_TIMEOUT_MS": "1000", "LOCK_TTL_MS": "1500"}
    assert Settings.from_env(fits).redis_wait_timeout_ms == 500
    with pytest.raises(ConfigError, match="^REDIS_WAIT_TIMEOUT_MS"):
        Settings.from_env({**fits, "REDIS_TIMEOUT_MS": "999"})
    with pytest.raises(ConfigError, match="^LOCK_TTL_MS"):
        Settings.from_env({**fits, "LOCK_TTL_MS": "1499"})
    assert Settings.from_env({**fits, "REDIS_WAIT_REPLICAS": "0", "LOCK_TTL_MS": "100"})


def test_sentinels_and_a_redis_cluster_exclude_each_other():
    sentinels = {"REDIS_SENTINELS": "127.0.0.1:26379"}
    assert Settings.from_env(sentinels).redis_sentinels == (("127.0.0.1", 26379),)
    with pytest.raises(ConfigError, match="^REDIS_SENTINELS"):
        Settings.from_env({**sentinels, "REDIS_CLUSTER": "1"})

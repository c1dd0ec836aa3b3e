"""Which Redis a test runs on: ``@pytest.mark.parametrize("redis_server", BACKENDS,
indirect=True)`` runs it on one redis-server, on a 3-master Redis Cluster, and on a server that
requires a password, reached as an ACL user (see conftest)."""

BACKENDS = ["single", "cluster", "acl"]

# Replicas for the race tests: the unsafe control enabled, and a 10 ms pause between read and
# write (in `lock` and `none`) that widens the race window, so `none` breaks every time
# instead of by chance.
RACE_ENV = {"ENABLE_UNSAFE_STRATEGY": "1", "CRITICAL_SECTION_DELAY_MS": "10"}

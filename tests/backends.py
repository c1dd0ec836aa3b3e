"""Which Redis a test runs on: ``@pytest.mark.parametrize("redis_server", BACKENDS,
indirect=True)`` runs it on one redis-server, on a 3-master Redis Cluster, and on a server that
requires a password, reached as an ACL user (see conftest)."""

BACKENDS = ["single", "cluster", "acl"]

"""Which Redis a test runs on: ``@pytest.mark.parametrize("redis_server", BACKENDS,
indirect=True)`` runs it on one redis-server and on a 3-master Redis Cluster (see conftest)."""

BACKENDS = ["single", "cluster"]

"""Real processes on loopback, started by the tests and the benchmark alike.

``redis_server`` and ``redis_cluster`` start redis-server processes on free ports;
``replicas`` runs the service under gunicorn in front of them; ``proxy`` sits between the
service and Redis to inject faults; ``load`` and ``customers`` send orders; ``books`` checks
what Redis holds against what the clients were told; ``faults`` and ``fault_scenarios`` run a
fault under load; ``experiment`` is the original proof of concept's burst; ``http`` holds the
small requests everything else makes.
"""

"""gunicorn settings for production, shared by the Dockerfile and the local launcher.

Run from the repository root: ``gunicorn 'service:create_app()'``. Every value can be tuned
from the environment without editing this file.
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# gevent by default: every connection is a greenlet on the worker's one thread, and a
# request that waits on Redis (or for a SKU's lock) gives the thread to the next one. It took
# a `lua` order for a third less CPU than gthread's 16 threads, whose accepting thread and
# pool hand every keep-alive request between them: 80-100 futex calls a request, on two
# cores (docs/benchmark/hot-path.md). GUNICORN_WORKER_CLASS=gthread keeps threads.
DEFAULT_WORKER_CLASS = "gevent"
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", DEFAULT_WORKER_CLASS).strip()
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gevent: connections (and so requests) a worker serves at once; the next wait in the backlog.
# 256 rather than gunicorn's 1,000: each may hold a Redis connection too, and 1,000 of each
# would pass the 1,024 open files some container runtimes allow a process.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "256"))
# gthread only. 16: with 32, the same route measured up to 18 % slower (more threads
# contending for the GIL). With LOCK_WAITERS=auto (as in k8s/) all but two may wait for a
# SKU's lock at once, and a lock order beyond that is shed with a 503.
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
# Redis connections a worker opens before its first request (more open as a burst needs them).
WARM_CONNECTIONS = 16
# Redis connections a worker may open beyond one per request it serves at once: the lease
# watchdog's, and room to spare (REDIS_MAX_CONNECTIONS, set in on_starting unless given).
SPARE_REDIS_CONNECTIONS = 16
# A request is bounded by LOCK_WAIT_MS + a few Redis timeouts; 30 s only catches a stuck worker.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Off by default: the service logs one line per order itself (with its outcome, latency and
# request id), and an access line per request on top cost a tenth of an order's CPU
# (docs/benchmark/hot-path.md). "-" writes it to stdout; a path, to that file.
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "off").strip()
if accesslog.lower() in ("", "off"):
    accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms replica=%({x-replica}o)s'
# gunicorn's C HTTP parser (the gunicorn_h1c package, pinned in requirements-image.txt),
# never the slower pure-Python one. gunicorn itself would only find it missing at the first
# request (and fail every request); importing it here stops the start-up instead.
import gunicorn_h1c  # noqa: E402, F401

http_parser = "fast"
# No runtime control socket: it would be one shared path in $HOME for every replica on a host,
# and a container's root file system is read-only.
control_socket_disable = True
# Where workers keep their heartbeat files; /dev/shm suits a read-only root file system.
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None

# Prometheus metrics (service/metrics.py) in prometheus_client's multiprocess mode: every worker
# writes its values to files in PROMETHEUS_MULTIPROC_DIR, and a scrape of any worker adds up
# all the files. The variable must be set before a worker imports prometheus_client, which
# on_starting does (so not with preload_app, which would import the app before it). Set, the
# directory is emptied of the last run's files at start (a restarted container keeps its
# emptyDir); unset, each master makes a temporary directory of its own, removed at exit (and,
# if the master was killed, by the next master to start on the machine).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
_METRICS_DIR_PREFIX = "order-service-metrics-"
_made_metrics_dir = None  # the directory this master made, if it made one


def _serves_at_once(cfg):
    """Requests a worker serves at once: gthread's threads, or gevent's connections."""
    return cfg.threads if cfg.worker_class_str == "gthread" else cfg.worker_connections


def _remove_orphaned_metrics_dirs(parent):
    import shutil

    for entry in os.scandir(parent):
        pid = entry.name[len(_METRICS_DIR_PREFIX):].split("-")[0]
        if not (entry.name.startswith(_METRICS_DIR_PREFIX) and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # its master is gone without cleaning up
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:  # alive (someone else's process, maybe): leave it
            pass


def on_starting(server):
    global _made_metrics_dir
    import glob
    import tempfile

    if _metrics_dir:
        os.makedirs(_metrics_dir, exist_ok=True)
        for stale in glob.glob(os.path.join(_metrics_dir, "*.db")):
            os.remove(stale)
        path = _metrics_dir
    else:
        _remove_orphaned_metrics_dirs(tempfile.gettempdir())
        path = tempfile.mkdtemp(prefix=f"{_METRICS_DIR_PREFIX}{os.getpid()}-")
        _made_metrics_dir = path
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    server.log.info("metrics: worker files in %s", path)
    # redis-py's default pool refuses its 101st connection: a gevent worker with more requests
    # waiting on Redis at once (a pile-up on a SKU's lock) would answer the rest, and /readyz,
    # with 503s. The workers inherit this.
    if os.environ.get("REDIS_MAX_CONNECTIONS") is None:
        os.environ["REDIS_MAX_CONNECTIONS"] = str(_serves_at_once(server.cfg)
                                                  + SPARE_REDIS_CONNECTIONS)


def on_exit(server):
    if _made_metrics_dir is not None:  # on_exit runs in the master only
        import shutil

        shutil.rmtree(_made_metrics_dir, ignore_errors=True)


def _first_requests(app):
    """Requests through the whole app that change nothing and need no Redis, answered before
    the worker takes a real one: Flask compiles its URL map on the first match, and the
    request, response, JSON and problem paths of the order endpoint and of Flask run for the
    first time. A refused order (422, before the domain) and a refused confirm (400, an unknown
    strategy) are not counted or logged."""
    client = app.test_client()
    client.get("/livez")
    client.post("/orders", json=[])  # the order endpoint's refusal
    client.post("/orders/warm-up/confirm?strategy=none-such")  # Flask's


def post_worker_init(worker):
    """Warm the worker before it takes its first request, so the first burst after a deploy
    or a scale-up is not the slow one: the service loads its scripts into Redis, opens Redis
    connections and caps its lock waiters at what the worker serves at once
    (OrderService.prepare_worker); a few requests that change nothing pay the app's own
    first-time costs; and under gthread every thread of the pool is started now rather than one
    by one under the burst."""
    at_once = _serves_at_once(worker.cfg)
    extensions = getattr(worker.wsgi, "extensions", {})
    service = extensions.get("order_service")
    if service is not None:
        service.prepare_worker(at_once, min(at_once, WARM_CONNECTIONS))
        _first_requests(worker.wsgi)
    pool = getattr(worker, "tpool", None)  # gthread's thread pool
    if pool is not None:  # submitted together, each task gets a thread of its own
        import time

        list(pool.map(time.sleep, [0.01] * worker.cfg.threads))
    worker.log.info("Worker warm (pid: %s)", worker.pid)  # the local launcher waits for these

"""gunicorn settings for production, shared by the Dockerfile and the local launcher.

Run from the repository root: ``gunicorn 'service:create_app()'``. Every value can be tuned
from the environment without editing this file.
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# Threads, not processes, carry the concurrency: a request mostly waits on Redis.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
# A request is bounded by LOCK_WAIT_MS + a few Redis timeouts; 30 s only catches a stuck worker.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# "-" is stdout; an empty value or "off" turns the access log off.
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-").strip()
if accesslog.lower() in ("", "off"):
    accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms replica=%({x-replica}o)s'
# No runtime control socket: it would be one shared path in $HOME for every replica on a host,
# and a container's root file system is read-only.
control_socket_disable = True
# Where workers keep their heartbeat files; /dev/shm suits a read-only root file system.
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None

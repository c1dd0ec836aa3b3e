"""Log set-up: the human format, or one JSON object per line (LOG_FORMAT=json), written off
the request threads.

A record's ``fields`` (``log.info(..., extra={"fields": {...}})``) become members of its JSON
object; the human format shows them inside its message already.

A request thread (a greenlet under gunicorn's gevent worker) only makes the record and
appends it to a buffer (``BufferedHandler``); a writer thread per process (a greenlet too,
under gevent) formats what has come in and writes it in one call, ten times a second, so
under load one write carries many lines instead of one system call per order.
Lines still buffered when the process exits normally are written by an ``atexit`` hook; a
process killed outright loses what was logged in its last 100 ms.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
from collections import deque
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class BufferedHandler(logging.Handler):
    """Keeps records in memory; a writer thread formats and writes them every ``interval_s``.

    A request thread only appends its record to a deque (no lock, no system call, no thread
    woken up); the writer wakes on its own clock and writes everything that came in with
    one call. A queue with a listener blocked on it (``QueueHandler`` + ``QueueListener``)
    wakes the listener for every record, and those wake-ups cost more CPU per order than the
    writing they move off the request thread (docs/benchmark/hot-path.md).
    """

    def __init__(self, target: logging.Handler, interval_s: float = 0.1) -> None:
        super().__init__()
        self.target = target
        self.interval_s = interval_s
        self._records: deque[logging.LogRecord] = deque()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle would take the handler's lock: deque.append needs none.
        if self.filter(record):
            self._records.append(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() instead
        self._records.append(record)

    def start(self) -> None:
        self._stop.clear()
        self._writer = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._writer.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        """Write what has come in so far, in one call."""
        lines = []
        records = self._records
        while records:
            record = records.popleft()
            try:
                lines.append(self.target.format(record) + "\n")
            except Exception:
                self.target.handleError(record)
        if lines:
            try:
                self.target.stream.write("".join(lines))
                self.target.stream.flush()
            except Exception:  # a closed or full stream must not stop the writer
                pass

    def close(self) -> None:
        """Stop the writer and write what is left."""
        self._stop.set()
        if self._writer is not None and self._writer is not threading.current_thread():
            self._writer.join(timeout=5)
        self.flush()
        super().close()


def configure(log_format: str) -> None:
    """Give the root logger one buffered handler in the chosen format, unless one is there
    already (a test runner's, or an embedding application's)."""
    root = logging.getLogger()
    if root.handlers:
        return
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter() if log_format == "json" else
                        logging.Formatter(TEXT_FORMAT))
    handler = BufferedHandler(stream)
    handler.start()
    # A process forked from this one (gunicorn's preload_app) needs a writer of its own.
    os.register_at_fork(after_in_child=handler.start)
    atexit.register(handler.close)  # the lines still buffered at a normal exit
    root.addHandler(handler)
    root.setLevel(logging.INFO)

"""How many storage requests this process retried: the run summary's ``storage_retries``.

The object-store clients retry transient failures themselves (gcsfs: 5xx, 408/429, connection
errors; botocore and s3fs: throttling, 5xx, resets, short reads) and say so only in their debug
log. ``watch()`` counts those log records with a handler on each client's logger, which passes
on to the usual handlers only what the logger's own level let through before, so nothing more
reaches them. ``annotator.pipeline.sources.read_many``'s own retries are counted with ``add``.
Counts are per process: read tasks hand theirs on with their rows (``_read_retries``), the
driver adds its own (plan, commits, publish, manifest, lock) to the summary.
"""

from __future__ import annotations

import logging
import threading

# logger -> text in the messages that mean "this request is being retried"
RETRY_LOGS = {
    "gcsfs": (" retrying after exception",),  # gcsfs.retry.retry_request
    "s3fs": ("Retryable error",),
    "botocore.retryhandler": ("Retry needed, action of",),  # legacy mode (aiobotocore logs here too)
    "botocore.retries.standard": ("Retry needed, retrying request",),
    "aiobotocore.retries.standard": ("Retry needed, retrying request",),
}

_lock = threading.Lock()
_count = 0
_watched: set[str] = set()


def add(n: int = 1) -> None:
    global _count
    with _lock:
        _count += n


def take() -> int:
    """Retries seen in this process since the last ``take`` (each retry is taken once, whichever
    thread or stage asks first: the read stage per batch of rows, the driver for its own calls)."""
    global _count
    with _lock:
        n, _count = _count, 0
    return n


class _Counter(logging.Handler):
    """On a client's logger (which then propagates no more): counts its retry records and hands
    on to the parent loggers what the logger's previous level let through."""

    def __init__(self, logger: logging.Logger, texts: tuple[str, ...], level: int):
        super().__init__()
        self.logger, self.texts, self.pass_level = logger, texts, level

    def emit(self, record: logging.LogRecord) -> None:
        msg = str(record.msg)
        if any(t in msg for t in self.texts):
            add()
        if record.levelno >= self.pass_level and self.logger.parent is not None:
            self.logger.parent.handle(record)


def watch() -> None:
    """Start counting (idempotent). Lowers each client logger to DEBUG; its records (and its
    child loggers', e.g. ``gcsfs.credentials``, which inherit DEBUG) go through a ``_Counter``
    instead of propagating, so handlers get only what they got before."""
    with _lock:
        todo = [name for name in RETRY_LOGS if name not in _watched]
        _watched.update(todo)
    for name in todo:
        logger = logging.getLogger(name)
        logger.addHandler(_Counter(logger, RETRY_LOGS[name], logger.getEffectiveLevel()))
        logger.propagate = False
        logger.setLevel(logging.DEBUG)

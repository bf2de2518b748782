"""How many storage requests this process retried: the run summary's ``storage_retries``.

The object-store clients retry transient failures themselves (gcsfs: 5xx, 408/429, connection
errors, short reads; botocore: throttling, 5xx, resets; s3fs on top: short reads, timeouts, a
client that gave up). ``watch()`` counts those retries where each client decides to send a request
again, so each re-sent request counts once (tests/test_retries.py checks each hook against the
emulators, with one scripted fault at a time):

* gcsfs: its retry loop (``gcsfs.retry.retry_request``) asks ``gcsfs.retry.is_retriable`` whether
  to try again, only while tries are left; ``watch`` wraps that predicate (same answer) and counts
  each ``True``.
* botocore (under s3fs, through aiobotocore): every request, the first and each retry, emits the
  ``request-created`` event with the attempt number in ``request.context['retries']['attempt']``;
  a handler in ``botocore.handlers.BUILTIN_HANDLERS`` (which every botocore session registers when
  it is created) counts attempts after the first.
* s3fs: its own retry loop (``s3fs.core._error_wrapper``) calls the operation again; ``watch``
  wraps that loop's operation and counts each call after the first.

Nothing reads log text and no logger's level changes. ``watch`` hooks the clients already
imported (``sources.filesystem`` calls it after creating a filesystem, before its first request).
Not counted: aiohttp re-sending an idempotent request once on a keep-alive connection the server
had closed (below both clients); gcsfs's batch delete loop (``rm`` of several objects) and s3fs's
``get_file`` re-reads (neither goes through the calls above); botocore clients whose session was
created before ``watch`` (only a filesystem made outside ``sources.filesystem`` and used first could
have one). ``annotator.pipeline.sources.read_many``'s own retries are counted with
``add``. Counts are per process: read tasks hand theirs on with their rows (``_read_retries``),
the driver adds its own (plan, commits, publish, manifest, lock) to the summary.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading

log = logging.getLogger(__name__)

_lock = threading.Lock()
_count = 0
_install = threading.Lock()
MARK = "_annotator_counts_retries"  # set on the wrappers, so that installing twice wraps once


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


def _wrap(module, name: str, counting) -> bool:
    """Replace ``module.name`` by ``counting(original)`` once (the wrapper is marked, so a second
    ``watch`` wraps nothing); False where the library no longer has it."""
    original = getattr(module, name, None)
    if original is None:
        return False
    if not getattr(original, MARK, False):
        wrapped = functools.wraps(original)(counting(original))
        setattr(wrapped, MARK, True)
        setattr(module, name, wrapped)
    return True


def _gcsfs(retry) -> bool:
    """Wrap gcsfs's retry predicate: its retry loop calls it (a module global) only when a try is
    left, and retries exactly when it says True."""

    def counting(original):
        def is_retriable(exception):
            again = original(exception)
            if again:
                add()
            return again

        return is_retriable

    return _wrap(retry, "is_retriable", counting)


def _on_request_created(request=None, **_) -> None:
    """botocore ``request-created``: attempt 1 is the request, later attempts its retries."""
    attempt = ((getattr(request, "context", None) or {}).get("retries") or {}).get("attempt", 1)
    if attempt > 1:
        add()


setattr(_on_request_created, MARK, True)


def _botocore(handlers) -> bool:
    """Every botocore (and aiobotocore) session created from now on registers the handler; its
    clients inherit it."""
    specs = getattr(handlers, "BUILTIN_HANDLERS", None)
    if not isinstance(specs, list):
        return False
    if not any(getattr(spec[1], MARK, False) for spec in specs):
        specs.append(("request-created.s3", _on_request_created))
    return True


def _s3fs(core) -> bool:
    """Wrap s3fs's retry loop: it calls the operation it was given once per try."""

    def counting(original):
        async def _error_wrapper(func, *args, **kwargs):
            tries = 0

            async def once(*a, **kw):
                nonlocal tries
                tries += 1
                if tries > 1:
                    add()
                return await func(*a, **kw)

            return await original(once, *args, **kwargs)

        return _error_wrapper

    return _wrap(core, "_error_wrapper", counting)


# module of a store client -> the hook that counts its retries
HOOKS = {"gcsfs.retry": _gcsfs, "botocore.handlers": _botocore, "s3fs.core": _s3fs}
_hooked: set[str] = set()


def watch() -> None:
    """Count the retries of the store clients imported so far (idempotent; cheap once done).
    ``sources.filesystem`` calls it once the filesystem's class is imported and before its first
    request: botocore sessions created before their hook are not counted."""
    if len(_hooked) == len(HOOKS):
        return
    with _install:
        for name, hook in HOOKS.items():
            module = sys.modules.get(name)
            if name in _hooked or module is None:
                continue
            _hooked.add(name)
            if not hook(module):  # a release that moved the hook: say so once; tests/test_retries.py fails
                log.warning("retries through %s are not counted: its retry hook is not where this "
                            "version of annotator expects it", name)

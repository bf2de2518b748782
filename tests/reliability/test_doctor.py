"""``annotator doctor`` on a real loopback cluster (head + 2 worker nodes, tests/reliability/cluster.py),
run as users run it: a separate process with ``--address``. The job's output is on S3 (moto on
127.0.0.1) and each node finds the store and the model through its own environment, as cluster
nodes do. Healthy: exit 0 and a table of every node; then a node is added with one planted fault
(its model cache empty; its S3 endpoint wrong, so the output cannot be written) and the verdict
must name that node, and only it, with the reason."""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import pytest

from annotator.models import registry
from annotator.runners.doctor import NodeReport, compare_versions, format_reports
from tests.helpers.emulators import free_port
from tests.helpers.emulators import s3 as moto_s3
from tests.reliability.cluster import loopback_cluster, wait_for
from tests.reliability.common import run_cli, spec_toml

MODEL = "default-lite"  # the tiny model, planted in the nodes' model cache under a built-in name
NODE_ENV = ("ANNOTATOR_CACHE", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION")


@contextlib.contextmanager
def environ(**values):
    """This process's environment for the nodes started inside (a node keeps the one it started with)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def model_cache(folder, tiny_model: str) -> str:
    """A model cache holding the tiny model as ``MODEL``, complete and current as setup leaves it."""
    target = folder / "models" / MODEL
    if not target.exists():
        shutil.copytree(tiny_model, target)
        info = json.loads((target / registry.INFO_FILE).read_text())
        info.update(sha256=registry.directory_sha256(target), estimator_version=registry.ESTIMATOR_VERSION)
        (target / registry.INFO_FILE).write_text(json.dumps(info))
    return str(folder)


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    cache = model_cache(tmp_path_factory.mktemp("cache"), tiny_model)
    with moto_s3() as (so, fs):
        fs.mkdir("labels")
        env = {"ANNOTATOR_CACHE": cache, "AWS_ENDPOINT_URL_S3": so["s3"]["endpoint_url"],
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        with environ(**env), loopback_cluster(head_cpus=1, worker_cpus=1, workers=2) as cluster:
            yield cluster, env, fs


def doctor(cluster, env, spec):
    """The CLI as a user runs it on a machine with the model but without the nodes' S3 endpoint:
    nothing of this environment's store settings may reach the nodes."""
    driver_env = {k: v for k, v in os.environ.items() if k not in NODE_ENV}
    driver_env["ANNOTATOR_CACHE"] = env["ANNOTATOR_CACHE"]  # the driver has the model: nodes are compared with it
    return run_cli("doctor", "--address", cluster.address, "--spec", str(spec), "--timeout", "600", env=driver_env)


def job(tmp_path, photos) -> object:
    return spec_toml(tmp_path / "job.toml", str(photos), "s3://labels/out", MODEL)


def node_name(node) -> str:
    return f"127.0.0.1 {node.node_id[:8]}"


def verdict(stdout: str) -> str:
    return stdout[stdout.index("\nFAIL:"):] if "\nFAIL:" in stdout else ""


def test_without_an_address_it_checks_this_machine(tiny_model, photos, tmp_path):
    """First in this module, before its cluster starts: the embedded local Ray, as `annotator run`
    starts it; a local output folder the probe had to create is gone again afterwards."""
    out = tmp_path / "not-yet" / "out"
    proc = run_cli("doctor", "--model", tiny_model, str(photos), str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("127.0.0.1 ")]
    assert len({r.split()[1] for r in rows}) == 1 and len(rows) == 6, proc.stdout  # one node, six checks
    assert f"16 entries under {photos}" in proc.stdout and "OK: 1 node(s) ready" in proc.stdout
    assert not (tmp_path / "not-yet").exists()


def test_a_healthy_cluster_passes_with_a_table_of_every_node(setup, photos, tmp_path):
    cluster, env, fs = setup
    proc = doctor(cluster, env, job(tmp_path, photos))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    nodes = [n["NodeID"] for n in cluster.node_table() if n["Alive"]]
    assert len(nodes) == 3
    for node_id in nodes:  # every node has its row of each check, all passed
        for check in ("tensorflow", "model", "input", "output", "object store", "versions"):
            row = [line for line in proc.stdout.splitlines() if line.startswith(f"127.0.0.1 {node_id[:8]}")
                   and f"  {check}  " in line]
            assert len(row) == 1 and "  ok  " in row[0], (node_id, check, proc.stdout)
    assert "no GPU (actors run on CPU)" in proc.stdout and "labelled" not in proc.stdout.lower()
    assert "1 person(s) found" in proc.stdout  # it labelled the bundled image (the tiny model: one person each)
    assert "OK: 3 node(s) ready" in proc.stdout
    fs.invalidate_cache()
    assert not fs.find("labels/out")  # the probe objects were removed


@contextlib.contextmanager
def planted(cluster, **env):
    """A worker node started with ``env`` on top of the others' environment; killed at the end,
    and waited for until the GCS knows it is gone (else the next doctor would wait on it)."""
    with environ(**env):
        node = cluster.add_worker()
    try:
        yield node
    finally:
        cluster.kill_worker(node)
        wait_for(lambda: not any(n["Alive"] for n in cluster.node_table() if n["NodeID"] == node.node_id), 120,
                 "the planted node marked dead")


def test_a_node_without_the_model_is_named(setup, photos, tmp_path):
    cluster, env, _ = setup
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    with planted(cluster, ANNOTATOR_CACHE=str(empty)) as node:
        proc = doctor(cluster, env, job(tmp_path, photos))
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-3000:]
    v = verdict(proc.stdout)
    assert "FAIL: 1 of 4 node(s)" in v, proc.stdout
    assert f"node {node_name(node)}: model: ModelNotBuiltError" in v and str(empty) in v, v
    assert len(v.strip().splitlines()) == 2, v  # that node's model check and nothing else


def test_a_node_that_cannot_write_the_output_is_named(setup, photos, tmp_path):
    cluster, env, fs = setup
    with planted(cluster, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{free_port()}") as node:  # nothing listens there
        proc = doctor(cluster, env, job(tmp_path, photos))
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-3000:]
    v = verdict(proc.stdout)
    assert "FAIL: 1 of 4 node(s)" in v, proc.stdout
    lines = v.strip().splitlines()[1:]
    assert lines and all(line.strip().startswith(f"node {node_name(node)}: output: ") for line in lines), v
    fs.invalidate_cache()
    assert not fs.find("labels/out")


def test_versions_that_differ_name_the_odd_node():
    """Our own comparison (no cluster can be given another Ray here): the node whose version is not
    the driver's and the others' fails, naming both versions."""
    import ray

    same = {"ray": ray.__version__, "tensorflow": "2.20.0", "python": "3.11.9", "annotator": "0.3.0"}
    reports = [NodeReport(f"{i}" * 16, "127.0.0.1", versions=dict(same)) for i in range(3)]
    reports[2].versions["tensorflow"] = "2.19.0"
    compare_versions(reports)
    text, ok = format_reports(reports)
    assert not ok
    assert "node 127.0.0.1 22222222: versions: tensorflow 2.19.0 here, 2.20.0 on the other nodes" in text
    assert text.count("FAIL") == 2  # that check's row and the verdict
    assert format_reports(reports[:2])[1]

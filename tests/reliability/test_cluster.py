"""A real multi-node Ray cluster on this machine (head + 2 worker nodes with one logical GPU each,
every node on 127.0.0.1): jobs submitted to its job server spread over both workers and equal a
single-node run; an inference actor killed mid-batch and a worker node lost mid-run cost nothing
but time. Drivers run as separate processes, as users run them."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from tests.reliability.cluster import alive, children, listening, loopback_cluster, on_loopback, wait_for
from tests.reliability.common import ANNOTATOR, REPO, assert_same, rows_by_id, spec_toml, summary

pytestmark = pytest.mark.slow

TWO_ACTORS = {"actors": 2, "gpus_per_actor": 1.0, "cpus_per_actor": 0.25}


@pytest.fixture(scope="module")
def cluster():
    with loopback_cluster(head_cpus=2, worker_cpus=1, workers=2, dashboard=True) as c:
        yield c


class NodeWatch:
    """Which node each process of the cluster belongs to, sampled while a job runs (decode
    workers exit with their job), and every listening socket the cluster's processes held."""

    def __init__(self, cluster):
        self.cluster, self.node_of, self.sockets = cluster, {}, set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.3):
            for node in self.cluster.all_nodes():
                raylet = self.cluster.raylet_pid(node)
                for pid in children(raylet):
                    self.node_of.setdefault(pid, node.node_id)
            self.sockets.update(listening(self.cluster.pids()))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _driver(spec_path, env=None) -> subprocess.Popen:
    return subprocess.Popen([ANNOTATOR, "run", "--spec", str(spec_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)


def _commits(out) -> int:
    return len(list((out / "_commits").glob("part-*.json"))) if (out / "_commits").exists() else 0


def test_nodes_advertise_and_listen_on_loopback_only(cluster):
    table = cluster.node_table()
    assert len([n for n in table if n["Alive"]]) == 3
    assert sorted(n["Resources"].get("GPU", 0) for n in table) == [0, 1, 1]
    assert all(on_loopback(a) for a in cluster.advertised()), cluster.advertised()
    sockets = listening(cluster.pids())
    assert len(sockets) >= 6  # GCS, 3 raylets, object managers, job server...
    assert all(on_loopback(addr) for _, addr, _ in sockets), [s for s in sockets if not on_loopback(s[1])]


def test_submitted_job_spreads_over_both_workers_and_equals_one_node(cluster, tiny_model, photos, reference,
                                                                       tmp_path):
    out = tmp_path / "out"
    spec = spec_toml(tmp_path / "job.toml", str(photos), str(out), tiny_model, TWO_ACTORS)
    with NodeWatch(cluster) as watch:
        proc = subprocess.run([ANNOTATOR, "submit", "--address", cluster.dashboard_url, "--spec", str(spec), "--wait",
                               "--executable", ANNOTATOR], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0 and "SUCCEEDED" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = summary(out)
    workers = {n.node_id for n in cluster.nodes}
    actors = {name: a for name, a in s["actors"].items() if a.get("node")}
    assert {a["node"] for a in actors.values()} == workers  # one actor per GPU node, each named by node
    assert all(a["node_ip"] == "127.0.0.1" and a["images"] > 0 for a in actors.values())
    decode_nodes = {watch.node_of.get(pid) for pid in s["decode_pids"]}
    assert len(decode_nodes - {None}) >= 2, (s["decode_pids"], watch.node_of)  # decode tasks spread
    assert watch.sockets and all(on_loopback(addr) for _, addr, _ in watch.sockets)  # the job's own servers too
    assert_same(rows_by_id(str(out)), reference)


def test_inference_actor_killed_mid_batch(cluster, busy_model, photos, reference, tmp_path):
    out = tmp_path / "out"
    # one image per call (~1 s of CPU each): after the kill the survivor alone has ~12 s of work
    # left, longer than the victim's restart (TensorFlow import + load + warm-up, ~8-10 s here);
    # with two images per call the survivor could finish first and the restart never check in
    spec = spec_toml(tmp_path / "job.toml", str(photos), str(out), busy_model,
                     {**TWO_ACTORS, "ray_address": cluster.address, "batch_size": 1})
    proc = _driver(spec)
    try:
        wait_for(lambda: _commits(out) >= 1 or proc.poll() is not None, 600, "a first commit")
        assert proc.poll() is None, proc.stdout.read()[-3000:]

        def busy_actor():  # an actor inside a model call: its CPU time grows
            for pid in cluster.inference_actors():
                before = cpu_ticks(pid)
                time.sleep(0.2)
                if cpu_ticks(pid) - before >= 5:  # >= 50 ms of 200: computing, not waiting
                    return pid
            return None
        victim = wait_for(busy_actor, 300, "an actor in the middle of a batch")
        os.kill(victim, signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout[-4000:]
    assert not alive(victim)
    s = summary(out)
    assert s["shards_failed"] == 0 and s["images"] == 16
    names = {int(name.rsplit(":", 1)[1]): a for name, a in s["actors"].items()}
    assert victim in names  # the killed actor had checked in (and labelled rows before it died)
    same_node = [pid for pid, a in names.items() if pid != victim and a.get("node") == names[victim].get("node")]
    assert same_node, s["actors"]  # Ray restarted it on its node, and the pool went on
    assert_same(rows_by_id(str(out)), reference)


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except OSError:
        return 0


def test_worker_node_lost_mid_run(cluster, busy_model, photos, reference, tmp_path):
    """Last in this module: it takes a node away (and puts a fresh one back for the teardown)."""
    out = tmp_path / "out"
    spec = spec_toml(tmp_path / "job.toml", str(photos), str(out), busy_model,
                     {**TWO_ACTORS, "ray_address": cluster.address, "no_progress_timeout_s": 30.0})
    proc = _driver(spec)
    try:
        wait_for(lambda: _commits(out) >= 1 or proc.poll() is not None, 600, "a first commit")
        wait_for(lambda: len(cluster.inference_actors()) == 2 or proc.poll() is not None, 300, "both actors")
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        lost = cluster.nodes[-1]
        before = _commits(out)
        cluster.kill_worker(lost)
        stdout, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout[-4000:]
    s = summary(out)
    assert s["shards_failed"] == 0 and s["shards_committed"] + s["shards_skipped"] == 8
    assert before < 8, "the node was lost after the job had finished its work"
    assert lost.node_id in {a.get("node") for a in s["actors"].values()}  # it did work before it was lost
    assert_same(rows_by_id(str(out)), reference)
    cluster.add_worker()

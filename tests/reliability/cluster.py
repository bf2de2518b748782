"""A real multi-node Ray cluster on this machine, every node on loopback.

Each node is its own raylet (and object store), started by ``ray.cluster_utils.Cluster`` as
children of this process; the worker nodes carry one logical GPU each. What keeps them on
127.0.0.1 (reproduced with Ray 2.60 here, see docs/reliability.md):

* ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in this process and every child: each node then takes
  127.0.0.1 as its address. With ``=1`` (Linux's default) Ray rewrites 127.0.0.1 to the machine's
  outward address (``services.resolve_ip_for_localhost``): even ``ray.init(address="127.0.0.1:P")``
  dialled 192.0.2.2 and hung. ``ray start --address`` refuses to add a node with ``=0``, which is
  why the nodes are started here and not by ``ray start``.
* ``Cluster`` writes the head's address to ``/tmp/ray/ray_current_cluster``, where any plain
  ``ray.init()`` on the machine (another engineer's tests, ``annotator run`` before this fix)
  would find and join it; each node gets a temp folder of its own instead, and the address goes
  into the head's (the job server's drivers look for it there).

Nodes are killed by their process ids, never by name: other Ray instances on the machine stay up.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc; no psutil here)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p:
                out.append(child)
                todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _hex_ip(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    v6 = ipaddress.IPv6Address(words)
    return str(v6.ipv4_mapped or v6)


def listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes: dict[int, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes[int(link[8:-1])] = pid
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                (addr, port), state, inode = fields[1].split(":"), fields[3], int(fields[9])
                if state == "0A" and inode in inodes:
                    out.append((inodes[inode], _hex_ip(addr), int(port, 16)))
    return out


def on_loopback(address: str) -> bool:
    return ipaddress.ip_address(address) in LOOPBACK


@contextmanager
def this_process_kv_kept():
    """Starting a node points this process's Ray key-value client (``ray.experimental.internal_kv``,
    which Ray Data and the session's own local Ray use) at the new node's GCS. Once the cluster is
    killed, the next call through it retries for 60 s and then Ray exits the whole process with
    code 1 (seen: pytest died silently in the test after this module). Put the previous client back."""
    from ray.experimental import internal_kv

    before = internal_kv.global_gcs_client
    try:
        yield
    finally:
        if before is None:
            internal_kv._internal_kv_reset()
        else:
            internal_kv._initialize_internal_kv(before)


@dataclass
class LoopbackCluster:
    """Head (CPUs only, optional job server) + workers with one logical GPU each."""

    head_cpus: float = 1
    worker_cpus: float = 1
    workers: int = 2
    dashboard: bool = False
    cluster: object = None
    nodes: list = field(default_factory=list)  # worker Node objects, in start order
    temps: list = field(default_factory=list)

    def start(self) -> LoopbackCluster:
        import ray._private.utils
        from ray.cluster_utils import Cluster

        assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0", "nodes would leave loopback"
        # the job server's usage reporting would dial usage-stats.ray.io
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        # one authentication mode for the nodes and every driver started from here: a local
        # ``ray.init()`` in this process switches it to token (Ray 2.60's default), and a driver in
        # token mode on a cluster without it has its actors cancelled before they start
        from ray._private.authentication import authentication_token_setup as auth

        if os.environ.get("RAY_AUTH_MODE") is None:
            auth._enable_token_auth()  # the env var, and this process's cached Ray config
        auth.ensure_token_if_auth_enabled(None, create_token_if_missing=True)
        write = ray._private.utils.write_ray_address
        ray._private.utils.write_ray_address = lambda *a, **k: None
        try:
            self.temps.append(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
            head = {"num_cpus": self.head_cpus, "include_dashboard": self.dashboard,
                    "object_store_memory": 100 * 2**20, "temp_dir": self.temps[-1]}
            if self.dashboard:
                # the agent's default port (52365) is taken by any other Ray with a dashboard on the
                # machine: the job server then has "No available agent to submit job"
                head.update(dashboard_host="127.0.0.1", dashboard_port=0, dashboard_agent_listen_port=free_port())
            with this_process_kv_kept():
                self.cluster = Cluster(initialize_head=True, head_node_args=head)
            # ... but the job server finds its own cluster through that file (else through any GCS
            # process on the machine: a submitted job's driver then joined another cluster): write it
            # into the head's own temp folder, which nothing else reads
            write(self.cluster.head_node.gcs_address, self.temps[-1])
            for _ in range(self.workers):
                self.add_worker()
        except BaseException:
            self.shutdown()
            raise
        finally:
            ray._private.utils.write_ray_address = write
        return self

    def add_worker(self):
        # its own temp folder, as a machine of its own has: nodes that share one would share the
        # job's unpacked working_dir, and the first node whose job workers exit deletes it from
        # under the job's driver (seen with ``annotator submit``: FileNotFoundError from getcwd)
        temp = tempfile.mkdtemp(prefix="rn", dir="/tmp")
        self.temps.append(temp)
        with this_process_kv_kept():
            node = self.cluster.add_node(num_cpus=self.worker_cpus, num_gpus=1, object_store_memory=100 * 2**20,
                                         temp_dir=temp)
        self.nodes.append(node)
        return node

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.cluster.webui_url}"

    def node_table(self) -> list[dict]:
        """The GCS's view of every node (as ``ray.nodes()``), without connecting a driver here."""
        return self.cluster.global_state.node_table()

    def advertised(self) -> set[str]:
        """Every address the nodes advertise to each other (GCS node table), the GCS address and
        the job server's."""
        out = {self.address.rsplit(":", 1)[0]}
        for n in self.node_table():
            out.add(n["NodeManagerAddress"])
        for node in self.all_nodes():
            out.add(node.node_ip_address)
        if self.dashboard:
            out.add(self.cluster.webui_url.rsplit(":", 1)[0])
        return out

    def all_nodes(self) -> list:
        return [n for n in (self.cluster.head_node, *self.nodes) if n is not None]

    def pids(self) -> set[int]:
        """Every process of the cluster now: each node's own processes and all they started (workers,
        actors, agents, the job server and the drivers of submitted jobs)."""
        out: set[int] = set()
        for node in self.all_nodes():
            for infos in node.all_processes.values():
                for info in infos:
                    out.add(info.process.pid)
                    out.update(children(info.process.pid))
        return out

    def raylet_pid(self, node) -> int:
        from ray._private import ray_constants

        return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid

    def node_of(self, pid: int):
        """The worker node whose raylet started ``pid`` (None: the head's, or none)."""
        for node in self.nodes:
            if pid in children(self.raylet_pid(node)):
                return node
        return None

    def inference_actors(self) -> dict[int, object]:
        """pid -> node of every live inference actor process (Ray Data names them after the stage)."""
        out = {}
        for node in self.nodes:
            for pid in children(self.raylet_pid(node)):
                if "InferenceStage" in cmdline(pid) and alive(pid):
                    out[pid] = node
        return out

    def kill_worker(self, node) -> None:
        """Node loss: SIGKILL the node's raylet and everything it started, at once."""
        pids = [self.raylet_pid(node), *children(self.raylet_pid(node))]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
        self.cluster.worker_nodes.discard(node)
        self.nodes.remove(node)

    def shutdown(self) -> None:
        """Kill every process of the cluster, by process id. Not ``Cluster.shutdown``: that also
        resets this process's Ray KV client and deletes ``/tmp/ray/ray_current_cluster``, which may
        belong to the session's local Ray or to someone else's cluster."""
        if self.cluster is None:
            return
        pids = self.pids()
        self.cluster.global_state.disconnect()  # its GCS client would outlive the GCS (see above)
        for node in self.all_nodes():
            node._gcs_client = None
        try:
            for node in [*self.nodes, self.cluster.head_node]:
                if node is not None:
                    node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
        finally:
            for pid in pids:  # workers a killed raylet left behind
                if alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for temp in self.temps:
                shutil.rmtree(temp, ignore_errors=True)
            self.cluster = None


@contextmanager
def loopback_cluster(**kwargs):
    c = LoopbackCluster(**kwargs)
    try:
        yield c.start()
    finally:
        c.shutdown()


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"{what}: not within {timeout_s:g} s")

"""Where the Ray runner's inference actors check in once their model is loaded and warmed up.

A module of its own that imports nothing but the standard library (and Ray, when called): the
registry's worker process and every inference actor import it while the first actor starts, when
on a small machine every process competes for the same cores. It used to live in the runner's
module, whose imports (pandas, pyarrow, the job's modules) cost ~0.6-0.8 s of CPU per process."""

from __future__ import annotations


class ActorRegistry:
    """A Ray actor with no CPU, on the driver's node. The run summary then lists every actor the
    pool started, with its GPU and start-up times, including one that never got a batch: rows
    alone would hide it."""

    def __init__(self) -> None:
        self.actors: dict[str, dict] = {}

    def register(self, info: dict) -> None:
        self.actors[info["actor"]] = {k: v for k, v in info.items() if k != "actor"}

    def all(self) -> dict[str, dict]:
        return self.actors


def check_in(registry, info: dict) -> None:
    """``InferenceStage``'s ``on_ready`` on a Ray actor: tell the job's ``ActorRegistry``, with the
    Ray node the actor runs on (nodes of one machine share a host name)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    registry.register.remote({**info, "node": node, "node_ip": ray.util.get_node_ip_address()})

"""Ray Data runner: read+decode tasks -> inference actor pool (one model per actor) -> driver sink.

The driver streams encoded Arrow batches out of Ray Data and commits each shard's Parquet part as
soon as all its rows have arrived, so progress is durable shard by shard and a rerun skips what
is committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict

import pyarrow as pa

from annotator import schema, sources, stages
from annotator.infer import skeleton_of
from annotator.models import loader, registry
from annotator.progress import ProgressBar, RunStats
from annotator.sink import DatasetSink
from annotator.spec import RunSpec

log = logging.getLogger(__name__)


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to ``address`` or start an embedded local Ray that stays on loopback."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    kwargs = {"include_dashboard": False, "log_to_driver": True, "logging_level": logging.WARNING,
              "configure_logging": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)


def _describe(model_path: str, skeleton: str) -> dict:
    """Joint names/edges of the requested skeleton, without loading the model where possible."""
    info = registry.info(model_path)
    skels = info.get("skeletons")
    if skels is not None:
        key = skeleton or info["native_skeleton"]
        if key not in skels:
            raise ValueError(f"unknown skeleton {skeleton!r}; this model has: {', '.join(sorted(skels))}")
        return {"name": skeleton or "all", **skels[key]}
    import ray

    @ray.remote(num_cpus=0)
    def describe() -> dict:
        import tensorflow as tf

        return skeleton_of(tf.saved_model.load(model_path), skeleton)

    return ray.get(describe.remote())


def fingerprint(model: loader.ResolvedModel, spec: RunSpec, plan_hash: str) -> str:
    doc = {"model_sha256": model.sha256, "settings": spec.settings.to_dict(),
           "schema_version": schema.version(), "plan": plan_hash}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def plan_hash(plan: sources.Plan) -> str:
    h = hashlib.sha256()
    for shard in plan.shards:
        for m in shard.members:
            h.update(f"{shard.shard_id}\0{m.image_id}\0{m.uri}\0{m.size}\n".encode())
    return h.hexdigest()


def run(spec: RunSpec) -> dict:
    """Run a job; returns the run summary (also written to ``OUTPUT/_summary.json``)."""
    import ray

    spec.validate()
    model = loader.resolve(spec.model)
    plan = sources.plan_folder(spec.input, spec.shard_size)
    init_ray(spec.compute.ray_address)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.verbose_progress = False
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_no_progress_timeout_s = spec.compute.no_progress_timeout_s

    skeleton = _describe(model.path, spec.settings.skeleton)
    fp = fingerprint(model, spec, plan_hash(plan))
    metadata = schema.file_metadata(model.to_dict(), skeleton, spec.settings.to_dict())
    sink = DatasetSink(spec.output, metadata, fingerprint=fp)
    committed = sink.committed()
    todo = [s for s in plan.shards if s.shard_id not in committed]
    stats = RunStats(shards_skipped=len(plan.shards) - len(todo))
    expected = {s.shard_id: len(s.members) for s in todo}
    items = [{"image_id": m.image_id, "source_uri": m.uri, "shard": s.shard_id}
             for s in todo for m in s.members]
    bar = ProgressBar(len(items), enabled=spec.progress)
    pending: dict[str, list[pa.Table]] = defaultdict(list)
    arrived: dict[str, int] = defaultdict(int)
    c = spec.compute
    if items:
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // c.batch_size, 1000)))
        ds = ds.map_batches(
            stages.read_decode, batch_size=c.batch_size, num_cpus=c.decode_cpus, batch_format="numpy",
            fn_kwargs={"max_pixels": spec.max_pixels,
                       "default_fov_degrees": spec.settings.default_fov_degrees})
        ds = ds.map_batches(
            stages.InferEncode, batch_size=c.batch_size, batch_format="numpy",
            fn_constructor_kwargs={"model_path": model.path, "settings": spec.settings},
            compute=ray.data.ActorPoolStrategy(min_size=c.actors, max_size=c.max_actors or c.actors),
            num_cpus=c.cpus_per_actor, num_gpus=c.gpus_per_actor or None)
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            table = table.cast(schema.arrow_schema())
            for shard_id in set(table.column("shard").to_pylist()):
                part = table.filter(pa.compute.equal(table.column("shard"), shard_id))
                pending[shard_id].append(part)
                arrived[shard_id] += part.num_rows
                if arrived[shard_id] == expected[shard_id]:
                    shard_table = pa.concat_tables(pending.pop(shard_id))
                    sink.write_shard(shard_id, shard_table)
                    stats.add_table(shard_table)
                    stats.shards_committed += 1
            bar.update(stats, table.num_rows)
    bar.close()
    manifest = sink.write_manifest()
    summary = stats.summary(output=spec.output, input=spec.input, model=model.to_dict(),
                            shards_total=len(plan.shards), rows_in_dataset=manifest["rows"],
                            fingerprint=fp)
    sink.write_json("_summary.json", summary)
    return summary

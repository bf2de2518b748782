"""Job specs: every jobs/*.toml validates; unknown keys and bad values are clear errors; the
command line wins over the file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from annotator import cli
from annotator.pipeline import spec
from annotator.runners import submit

JOBS = sorted((Path(__file__).resolve().parent.parent / "jobs").glob("*.toml"))


def test_there_are_job_specs():
    assert len(JOBS) >= 4


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_job_specs_validate(path):
    s = submit.validate(str(path))
    assert s.input and s.output and s.compute.batch_size >= 1


def test_unknown_keys_name_the_key_and_the_valid_ones():
    with pytest.raises(spec.SpecError, match=r"unknown key\(s\) in \[compute\]: actros; valid: .*actors"):
        spec.from_dict({"input": "a", "output": "b", "compute": {"actros": 2}})
    with pytest.raises(spec.SpecError, match=r"unknown key\(s\) in job spec: shardsize"):
        spec.from_dict({"input": "a", "output": "b", "shardsize": 3})


@pytest.mark.parametrize("data, message", [
    ({"shard_size": 0}, "shard_size must be >= 1"),
    ({"shard_size": "12"}, "shard_size must be int"),
    ({"kind": "zip"}, "kind must be one of"),
    ({"runner": "spark"}, "runner must be one of ray, beam"),
    ({"compute": {"beam_options": "DirectRunner"}}, "beam_options must be dict"),
    ({"video_every": 0}, "video_every must be >= 1"),
    ({"overwrite": True, "retry_errors": True}, "exclude each other"),
    ({"compute": {"batch_timeout_s": -1}}, "batch_timeout_s must be >= 0"),
    ({"compute": {"shard_attempts": 0}}, "shard_attempts must be >= 1"),
    ({"compute": {"commit_on": "head"}}, "commit_on must be one of driver, workers"),
    ({"compute": {"gpus_per_actor": True}}, "gpus_per_actor must be float"),
    ({"settings": {"num_aug": 0}}, "num_aug must be >= 1"),
    ({"storage_options": {"s3": "endpoint"}}, "storage_options must map a protocol"),
    ({"lock_stale_s": 10, "lock_heartbeat_s": 30}, "lock_stale_s must be more than twice"),
    ({"input": "memory://photos"}, "memory:// lives in this process only"),
    ({"output": "memory://labels"}, "memory:// lives in this process only"),
])
def test_bad_values_are_errors(data, message):
    with pytest.raises(spec.SpecError, match=message):
        spec.from_dict({"input": "a", "output": "b", **data})


def test_beam_may_use_memory():
    assert spec.from_dict({"input": "memory://photos", "output": "memory://labels", "runner": "beam"}).runner == "beam"


def test_command_line_wins_over_the_spec_file(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('input = "in"\noutput = "out"\nshard_size = 64\n[compute]\nbatch_size = 4\nactors = 2\n'
                    '[settings]\nnum_aug = 3\n')
    parser = cli.build_parser()
    args = parser.parse_args(["run", "--spec", str(path), "--batch-size", "16", "--num-aug", "1", "--retry-errors",
                              "--video-every", "5"])
    s = spec.from_dict(cli.run_spec_data(args))
    assert (s.input, s.shard_size, s.compute.batch_size, s.compute.actors) == ("in", 64, 16, 2)
    assert s.settings.num_aug == 1 and s.retry_errors and not s.overwrite and s.video_every == 5
    assert isinstance(args, argparse.Namespace)


def test_submit_entrypoint_runs_the_shipped_spec():
    assert submit.entrypoint("job.toml", ["--overwrite"]) == "annotator run --spec job.toml --no-progress --overwrite"
    assert submit.entrypoint("my job.toml", [], "/opt/venv/bin/annotator").startswith(
        "/opt/venv/bin/annotator run --spec 'my job.toml'")


def test_an_actor_pool_that_takes_every_local_cpu_fails_fast_with_the_fix():
    from annotator.runners.job import ClusterError
    from annotator.runners.ray_cluster import check_cpus

    check_cpus(spec.ComputeSpec(actors=1, cpus_per_actor=1.0), 2.0, fixed=True)  # room for a decode task
    check_cpus(spec.ComputeSpec(actors=2, cpus_per_actor=0.75, decode_cpus=0.5), 2.0, fixed=True)
    with pytest.raises(ClusterError, match="decode_cpus"):  # a decode task takes one core by default
        check_cpus(spec.ComputeSpec(actors=1, cpus_per_actor=1.5), 2.0, fixed=True)
    with pytest.raises(ClusterError, match="--cpus-per-actor"):
        check_cpus(spec.ComputeSpec(actors=1, cpus_per_actor=2.0), 2.0, fixed=True)
    with pytest.raises(ClusterError, match="never"):
        check_cpus(spec.ComputeSpec(actors=2, cpus_per_actor=1.0), 2.0, fixed=True)
    check_cpus(spec.ComputeSpec(actors=2, cpus_per_actor=1.0), 2.0, fixed=False)  # a cluster may grow


def test_reading_waits_for_the_actor_pool_only_where_the_cluster_lacks_its_resources():
    from annotator.runners.ray_cluster import pool_fits

    gpu = spec.ComputeSpec(actors=2, cpus_per_actor=1.0, gpus_per_actor=1.0)
    assert pool_fits(gpu, 2, {"CPU": 16.0, "GPU": 2.0})
    assert not pool_fits(gpu, 2, {"CPU": 16.0, "GPU": 1.0})  # a GPU node still booting: wait, fail fast
    assert not pool_fits(gpu, 2, {"CPU": 16.0})
    assert pool_fits(gpu, 1, {"CPU": 1.0, "GPU": 1.0})  # a retry round waits for one actor
    assert pool_fits(spec.ComputeSpec(), 1, {"CPU": 2.0})

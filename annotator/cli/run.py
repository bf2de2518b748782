"""``annotator run``: INPUT -> OUTPUT, a job spec from flags and ``--spec``, run by a runner."""

from __future__ import annotations

import sys

from annotator.cli.common import vector3


def add(sub) -> None:
    p = sub.add_parser("run", help="annotate images: INPUT folder/URI -> OUTPUT Parquet dataset")
    p.add_argument("input", nargs="?", help="folder or fsspec URI of images")
    p.add_argument("output", nargs="?", help="output folder or fsspec URI")
    p.add_argument("--spec", help="TOML job spec (command-line options win over it)")
    p.add_argument("--model", help="built-in model name (default, default-lite/full/heavy) or SavedModel path")
    p.add_argument("--skeleton", help="joint set, e.g. blazepose_33; '' = all joints of the model")
    p.add_argument("--num-aug", type=int, help="test-time augmentations per person (default 1)")
    p.add_argument("--batch-size", type=int, help="images per inference call (default 8)")
    p.add_argument("--shard-size", type=int, help="images per output part (default 256)")
    p.add_argument("--detector-threshold", type=float)
    p.add_argument("--max-detections", type=int)
    p.add_argument("--min-quality", type=float,
                   help="drop people whose quality score (0-1, people[].quality) is below this (default 0)")
    p.add_argument("--fov", type=float, dest="default_fov_degrees",
                   help="field of view (degrees) assumed when EXIF has no focal length (default 55)")
    p.add_argument("--world-up", type=vector3, dest="world_up_vector", metavar="X,Y,Z",
                   help="the world's up direction in the extrinsics' frame (default 0,-1,0 as MeTRAbs; a Z-up "
                        "lab: 0,0,1): keeps crops upright and defines the floor")
    p.add_argument("--floor-height", type=float, dest="ground_height_mm", metavar="MM",
                   help="images with extrinsics: the floor is X . up = MM in the world frame (default 0); standing "
                        "people are put on it, which fixes their depth and scale")
    p.add_argument("--no-ground-plane", action="store_false", dest="ground_plane", default=None,
                   help="keep the monocular depth even where extrinsics give a floor")
    p.add_argument("--actors", type=int, help="inference actors (default 1)")
    p.add_argument("--gpus-per-actor", type=float)
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--runner", choices=["ray", "beam"],
                   help="ray (default: Ray Data, an embedded local Ray unless --ray-address) or beam (Apache Beam, "
                        "DirectRunner unless [compute.beam_options] in --spec says otherwise)")
    p.add_argument("--ray-address", help="connect to this Ray cluster instead of starting a local one")
    p.add_argument("--kind", choices=["auto", "folder", "tar", "manifest", "video"],
                   help="input kind (default: detected from what INPUT holds)")
    p.add_argument("--video-every", type=int, help="videos: annotate every k-th frame (default 1)")
    p.add_argument("--video-overlap", type=int,
                   help="videos: frames each shard reads past its end to smooth its last frames (default 8)")
    p.add_argument("--no-temporal", action="store_false", dest="temporal", default=None,
                   help="videos: per-frame values (track ids only), no left/right repair, body scale or smoothing")
    p.add_argument("--rig", action="store_true",
                   help="INPUT is a calibrated camera rig: synchronised videos or frame folders, one per camera "
                        "(INPUT/videos/camNN.mp4 or INPUT/camNN/), and INPUT/calibration/ (Qualisys, OpenCV YAML, "
                        "JSON, Pose2Sim TOML); checked against its views before any work, then every instant's "
                        "views are fused into one world-space person (docs/models.md, Multi-camera rigs; "
                        "[rig] in --spec: offsets, window, overlap)")
    p.add_argument("--rig-calibration", metavar="PATH", help="with --rig: the calibration folder or file")
    p.add_argument("--batch-timeout", type=float, dest="batch_timeout_s",
                   help="seconds one inference call may take before it is retried (default 600; 0 = none)")
    p.add_argument("--shard-attempts", type=int, help="tries a failing shard gets before it is named (default 3)")
    p.add_argument("--commit-on", choices=["driver", "workers"],
                   help="Ray runner: write and commit parts on driver threads (default) or in Ray tasks on the "
                        "workers (for drivers that would otherwise top out: docs/scaling.md)")
    p.add_argument("--max-error-rate", type=float, metavar="RATE",
                   help="stop the job when more than this share of the images that reached the model fail in "
                        "inference (default 0.05; judged from 100 images on): a broken model or node fails every "
                        "image, real data far fewer")
    p.add_argument("--overwrite", action="store_true",
                   help="discard what OUTPUT holds (every version) and start over")
    p.add_argument("--new-version", action="store_true",
                   help="label everything into a new version of OUTPUT with a fresh plan, even with the same model "
                        "and settings (another model or settings make a new version by themselves; older versions "
                        "stay readable as OUTPUT@vN)")
    p.add_argument("--append", action="store_true",
                   help="a rerun that finds new inputs labels them as new shards (a daily growing folder); "
                        "removed or changed inputs are reported, their rows kept")
    p.add_argument("--frozen", action="store_true",
                   help="a rerun keeps the output's frozen plan as it is: the input is not listed again, and "
                        "new inputs stay unlabelled")
    p.add_argument("--retry-errors", action="store_true",
                   help="rerun the error rows of committed shards and recommit those shards")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--license", metavar="ID",
                   help="the labels' licence for the dataset card, e.g. cc-by-4.0 (default 'other': the labels "
                        "follow the images' terms, which annotator does not know)")
    p.set_defaults(func=cmd_run, user_errors=user_errors)


def run_spec_data(args) -> dict:
    """The job spec as a dict: the --spec TOML with command-line options on top."""
    data: dict = {}
    if args.spec:
        import tomllib

        with open(args.spec, "rb") as f:
            data = tomllib.load(f)
    for key in ("input", "output", "runner", "model", "shard_size", "kind", "video_every", "video_overlap",
                "temporal", "max_error_rate", "license"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    for key in ("overwrite", "retry_errors", "append", "frozen", "new_version"):
        if getattr(args, key, False):
            data[key] = True
    settings = data.setdefault("settings", {})
    for key in ("skeleton", "num_aug", "detector_threshold", "max_detections", "default_fov_degrees",
                "min_quality", "world_up_vector", "ground_height_mm", "ground_plane"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    compute = data.setdefault("compute", {})
    for key in ("batch_size", "actors", "gpus_per_actor", "cpus_per_actor", "ray_address", "batch_timeout_s",
                "shard_attempts", "commit_on"):
        if getattr(args, key, None) is not None:
            compute[key] = getattr(args, key)
    if getattr(args, "no_progress", False):
        data["progress"] = False
    if getattr(args, "rig", False) or getattr(args, "rig_calibration", None):
        rig = data.setdefault("rig", {})
        if getattr(args, "rig_calibration", None):
            rig["calibration"] = args.rig_calibration
    return data


def user_errors() -> tuple[type[BaseException], ...]:
    """What stops a run before any work, said in one line: the spec, the lock, the plan, an output
    made with other settings, a cluster without the pool's resources."""
    from annotator.pipeline.fingerprint import FingerprintError
    from annotator.pipeline.lock import LockedError
    from annotator.pipeline.plan import PlanError
    from annotator.pipeline.rig import RigError
    from annotator.pipeline.spec import SpecError
    from annotator.runners.job import ClusterError

    return (SpecError, LockedError, PlanError, FingerprintError, ClusterError, RigError)


def cmd_run(args) -> int:
    from annotator.pipeline import enginelog
    from annotator.pipeline import spec as spec_mod

    data = run_spec_data(args)
    if "input" not in data or "output" not in data:
        print("annotator run: INPUT and OUTPUT are required (as arguments or in --spec)", file=sys.stderr)
        return 2
    spec = spec_mod.from_dict(data)
    if spec.rig is not None:
        check_rig(spec)
        if "world_up_vector" not in data.get("settings", {}):  # the floor's up as the calibration fixes it
            from annotator.pipeline import rig

            spec = rig.with_world_up(spec)
    enginelog.set_destination(spec.output, spec.storage_options)  # the engine log ends in OUTPUT/_logs/
    if spec.runner == "beam":
        from annotator.runners import beam

        summary = beam.run(spec)
    else:
        from annotator.runners import ray_data

        summary = ray_data.run(spec)
    print(format_summary(summary))
    up_warning = world_up_warning(summary, spec.settings.world_up_vector)
    if up_warning:
        print(up_warning, file=sys.stderr)
    if summary.get("stopped"):
        print(f"annotator run: stopped: {summary['stopped']}", file=sys.stderr)
        return 1
    if summary.get("shards_failed"):
        print(f"annotator run: {summary['shards_failed']} shard(s) failed after "
              f"{spec.compute.shard_attempts} attempt(s):", file=sys.stderr)
        for shard, reason in summary["failed_shards"].items():
            print(f"  shard {shard}: {reason}", file=sys.stderr)
        return 1
    return 0


def world_up_warning(summary: dict, up) -> str | None:
    """One line when images with extrinsics suggested another world up (the summary's
    ``world_up_check``): their crops were turned by the up they were given (``pipeline.upright``)."""
    from annotator.pipeline import upright

    check = summary.get("world_up_check") or {}
    line = upright.warning(check.get("images_with_extrinsics", 0), check.get("likelier_up") or {}, up, "images")
    return f"annotator run: warning: {line}" if line else None


def format_summary(s: dict) -> str:
    lines = [
        f"images:   {s['images']} ({s['images_ok']} ok, {s['images_error']} errors)"
        + (f", {s['shards_skipped']} shard(s) already committed" if s.get("shards_skipped") else ""),
        f"people:   {s['people']}",
        f"dataset:  {s['rows_in_dataset']} rows in {s['shards_total']} shard(s)",
        f"output:   {s['output']}",
        f"time:     {s['elapsed_seconds']} s ({s['images_per_second']} images/s)"
        + (f"; first labels after {s['seconds_to_first_rows']} s (start-up, model load, warm-up), "
           f"then {s['steady_images_per_second']} images/s" if s.get("steady_images_per_second") else ""),
    ]
    version = s.get("version")
    if version:
        lines.append(f"version:  v{version['number']}"
                     + (f" (parent v{version['parent']}: {version['reason']})" if version.get("parent") else "")
                     + ("; the latest: readers of the output read it" if version["latest"] == version["number"] else
                        "; not published yet: readers read "
                        + (f"v{version['latest']}" if version["latest"] else "nothing") + " until every shard of it is "
                        "committed"))
    changes = (s.get("plan") or {}).get("changes")
    if changes and changes.get("error"):
        lines.append(f"input:    not listed ({changes['error']}): the frozen plan was resumed as it is")
    elif changes and (changes["added"] or changes["removed"] or changes["changed"]):
        lines.append(f"input:    {changes['added']} new"
                     + (f" (shards {'-'.join(changes['appended_shards'])})" if changes.get("appended_shards") else "")
                     + f", {changes['removed']} removed, {changes['changed']} changed since the plan"
                     + (" (their rows are of the planned inputs)" if changes["removed"] or changes["changed"] else ""))
    elif changes:
        lines.append(f"input:    unchanged since the plan ({changes['listed']} checked in {changes['seconds']} s)")
    if s.get("shards_repaired"):
        lines.append(f"repaired: {s['shards_repaired']} shard(s) (--retry-errors)")
    if s.get("errors_by_reason"):
        lines.append("errors:   " + ", ".join(f"{k}={v}" for k, v in sorted(s["errors_by_reason"].items())))
    if s.get("stopped"):
        lines.append(f"STOPPED:  {s['stopped']} (committed shards are kept; rerun once the cause is fixed)")
    if s.get("shards_failed"):
        lines.append(f"FAILED:   {s['shards_failed']} shard(s): {', '.join(s['failed_shards'])} "
                     f"(rerun the same command to retry them)")
    lines.append(f"open it:  {sys.executable} -c \"from annotator.outputs import dataset; "
                 f"print(dataset.read_table('{s['output']}').to_pandas())\"   (or see docs/consumers.md)")
    return "\n".join(lines)


def check_rig(spec) -> None:
    """``--rig`` / ``[rig]``: the rig against its calibration, before any work (a misfit is a
    ``RigError``: one line, exit 2); says what will be labelled."""
    from annotator.pipeline import rig

    checked = rig.load(spec)
    shards = rig.windows(checked.frames, spec.rig.window, spec.rig.overlap)
    print(f"rig {spec.input}: {len(checked.views)} views ({', '.join(v.name for v in checked.views)}) fit the "
          f"calibration; {checked.frames} frames in {len(shards)} shard(s) of {spec.rig.window}", file=sys.stderr)

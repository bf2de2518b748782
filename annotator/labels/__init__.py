"""The label format and the per-person steps after inference: the Arrow schema and its metadata,
the camera codec, the quality score, the ground plane. numpy/pyarrow only; imports nothing of the
pipeline or the runners."""

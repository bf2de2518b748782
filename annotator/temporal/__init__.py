"""The temporal steps of videos, numpy only: track ids (tracking), per-track left/right repair and
one body scale (consistency), smoothing. The pipeline's ``sequence`` applies them to video shards;
nothing here reads files or imports the pipeline."""

"""``annotator export OUTPUT DEST --format webdataset|coco|crops``: a finished output as training
data: WebDataset shards (image + labels per sample), COCO keypoints JSON, or person crops with their
virtual camera. See ``run`` (the driver), ``samples`` (filters, keys, labels), one module per format."""

from annotator.outputs.export.config import FORMATS, ExportConfig
from annotator.outputs.export.run import ExportError, export, format_summary
from annotator.outputs.export.samples import Filters

__all__ = ["FORMATS", "ExportConfig", "ExportError", "Filters", "export", "format_summary"]

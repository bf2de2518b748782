"""Entry point for Ray job submission: ``python jobs/run.py jobs/NAME.toml [annotator run options]``.

``annotator submit`` uses the installed ``annotator`` command instead; this script is for clusters
where the package is shipped as a working directory (``ray job submit --working-dir . -- python
jobs/run.py jobs/gcs-folder.toml``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotator.cli import main  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python jobs/run.py JOB.toml [annotator run options]")
    sys.exit(main(["run", "--spec", sys.argv[1], *sys.argv[2:]]))

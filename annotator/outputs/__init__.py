"""Tools for a job's output, apart from the pipeline that writes it: reading it for training
(``dataset``), ``annotator status``, ``report``, ``render`` and ``filter`` (``subset``). They read
through ``annotator.pipeline.layout.Output``: the manifest, never a glob, parts verified by checksum."""

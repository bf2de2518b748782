"""Helpers shared by the tests (not tests): input photos, test-sized jobs, the ``annotator``
command, and the one real output that the output-tool tests share."""

"""Input storage without Ray: parallel listing, brace patterns, WebDataset tar samples."""

from __future__ import annotations

import fsspec

from annotator.pipeline import sources
from tests.helpers.photos import write_tar


def test_parallel_listing_finds_everything_once(tmp_path):
    fs = fsspec.filesystem("memory")
    root = f"/lst-{tmp_path.name}"
    expected = set()
    for i in range(5):
        for j in range(7):
            path = f"{root}/p{i}/q{j}/img{i}{j}.jpg"
            fs.pipe_file(path, b"x")
            expected.add(path)
    fs.pipe_file(f"{root}/top.jpg", b"x")
    expected.add(f"{root}/top.jpg")
    entries = sources.list_tree(fs, root, min_prefixes=8)
    assert [e.path for e in entries] == sorted(expected)


def test_brace_patterns():
    assert sources.expand_braces("s-{00..02}.tar") == ["s-00.tar", "s-01.tar", "s-02.tar"]
    assert sources.expand_braces("{a,b}/x{8..10}") == ["a/x8", "a/x9", "a/x10", "b/x8", "b/x9", "b/x10"]


def test_tar_samples_in_stored_order(tmp_path):
    write_tar(tmp_path / "s.tar", [("a/k1", {"jpg": b"1", "json": b"{}"}), ("a/k2", {"png": b"2"}),
                                   ("k3", {"cls": b"3"})])
    got = list(sources.iter_tar_samples(str(tmp_path / "s.tar")))
    assert got == [("a/k1", {"jpg": b"1", "json": b"{}"}), ("a/k2", {"png": b"2"}), ("k3", {"cls": b"3"})]

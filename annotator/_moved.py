"""Old import paths of modules that moved into layer packages (0.1 -> 0.2), kept for one release.

``import annotator.schema`` (or ``from annotator import layout``) still works: it warns with a
DeprecationWarning and returns the module from its new place, the same module object, so state
and ``isinstance`` checks are shared. Remove this file, and its line in ``annotator/__init__.py``,
in the release after next."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_PACKAGES = {
    "pipeline": ("decode", "encode", "errors", "infer", "layout", "lock", "plan", "progress", "retries",
                 "sequence", "shards", "sink", "sources", "spec", "stages"),
    "labels": ("camera_codec", "ground_plane", "quality", "schema"),
    "temporal": ("consistency", "smoothing", "tracking"),
    "runners": ("submit",),
}
MOVED = {f"annotator.{name}": f"annotator.{pkg}.{name}" for pkg, names in _PACKAGES.items() for name in names}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED[spec.name]
        # stacklevel 2: importlib's own frames are skipped, so the warning names the caller's import
        warnings.warn(f"{spec.name} moved to {new}; the old path is removed in the release after next",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        """The module is the new one, already executed."""


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())

"""annotator: 3D human pose pseudo-labels at cluster scale (MeTRAbs-style estimator, Ray/Beam runners).

Packages by layer (each imports only those below it; ``pyproject.toml``'s import contract):
``cli`` > ``runners`` > ``outputs`` | ``eval`` > ``pipeline`` > ``labels`` | ``temporal`` | ``models``
> ``estimator``. ``docs/architecture.md`` has the map."""

__version__ = "0.1.0"

from annotator import _moved  # noqa: E402 - old module paths, for one release

_moved.install()

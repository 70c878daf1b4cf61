"""Building and loading the kernel library, and deciding whether a cached build may be loaded (private).

The library runs native code in this process, so it is never loaded from a place another
user could write. It lives in a directory of ours only (0o700, owned by us, in a parent
nobody else can rename it out of), and its SHA-256 is recorded when it is built, beside
the package version, the kernel version, torch's version, the compiler flags and a hash
of the C++ sources, in ``<library>.json``. A library whose record is missing or does not
match is rebuilt, never loaded. A build runs in a fresh private folder and is published
(library first, then its record) only once it is loaded: a concurrent build by another
process of ours cannot swap the file that is loaded.

The compiler is driven by :func:`torch.utils.cpp_extension.load` (ninja, torch's include
paths, its ABI flags); nothing here knows about C++ beyond the flags.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

#: Bumped whenever the operators' schemas or meaning change.
KERNEL_VERSION = 3
SOURCES = Path(__file__).with_name("csrc")
_RECORD = ".json"


@dataclass(frozen=True)
class Spec:
    """What to build: the library's name, its sources (``.cpp`` compiled, ``.h`` hashed) and flags."""

    name: str
    sources: tuple[Path, ...]
    headers: tuple[Path, ...] = ()
    cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()

    def identity(self) -> dict:
        """What a cached library must have been built from."""
        from noisynn import __version__

        digest = hashlib.sha256()
        for path in sorted((*self.sources, *self.headers), key=lambda p: p.name):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return {"name": self.name, "package_version": __version__, "kernel_version": KERNEL_VERSION,
                "torch_version": torch.__version__, "python": sys.implementation.cache_tag,
                "source_sha256": digest.hexdigest(), "cflags": list(self.cflags), "ldflags": list(self.ldflags)}

    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.identity(), sys.platform]).encode()).hexdigest()[:16]


def kernel_spec() -> Spec:
    """The noisynn operators: every file of ``csrc/``, portable flags (no ``-march=native``:
    the instruction set is chosen at run time, see ``ops.cpp``)."""
    files = sorted(SOURCES.iterdir())
    # at::parallel_for is inline OpenMP code when torch's parallel backend is OpenMP (Linux
    # wheels): then the extension needs -fopenmp, and shares torch's libgomp (same soname)
    openmp = "parallel backend: OpenMP" in torch.__config__.parallel_info()
    omp = ("-fopenmp",) if openmp else ()
    return Spec(
        name="noisynn_kernels",
        sources=tuple(f for f in files if f.suffix == ".cpp"),
        headers=tuple(f for f in files if f.suffix == ".h"),
        # -fno-math-errno lets sqrtf vectorise; no -ffast-math: NaN and infinities behave
        cflags=("-O3", "-fno-math-errno", "-Wno-psabi", *omp),
        ldflags=omp,
    )


def cache_dir() -> Path:
    """``$NOISYNN_CACHE_DIR/kernels``, else the user cache directory's ``noisynn/kernels``."""
    env = os.environ.get("NOISYNN_CACHE_DIR")
    if env:
        return Path(env) / "kernels"
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("noisynn")) / "kernels"
    except Exception:  # pragma: no cover - platformdirs is a dependency
        return Path(tempfile.gettempdir()) / "noisynn-kernels"


def _unsafe(path: Path, *, leaf: bool) -> str | None:
    """Why ``path`` is not a safe home for the library (None if it is)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) and leaf:
        return f"{path} is a symbolic link"
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if hasattr(os, "getuid") and st.st_uid != os.getuid() and (leaf or st.st_uid != 0):
        return f"{path} is owned by uid {st.st_uid}, not by this user"
    if st.st_mode & 0o022 and (leaf or not st.st_mode & stat.S_ISVTX):
        return f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def private_dir() -> Path:
    """The kernel cache directory, created 0o700; a fresh private one if it is not safe."""
    folder = cache_dir()
    try:
        if not folder.is_dir():
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
        reason = _unsafe(folder, leaf=True) or _unsafe(folder.parent, leaf=False)
    except OSError as exc:
        reason = f"{folder} is not usable ({exc})"
    if reason is None:
        return folder
    fresh = Path(tempfile.mkdtemp(prefix="noisynn-kernels-"))  # 0o700, ours, new
    warnings.warn(f"noisynn: not loading kernels from {folder}: {reason}; building into {fresh} for this process "
                  f"(make it private with `chmod 700 {folder}`)", RuntimeWarning, stacklevel=4)
    return fresh


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def target(spec: Spec, folder: Path) -> Path:
    """Where the verified library of ``spec`` lives in ``folder``."""
    from torch.utils.cpp_extension import LIB_EXT

    return folder / f"{spec.name}_{spec.key()}{LIB_EXT}"


def verified(path: Path, spec: Spec) -> bool:
    """True if ``path`` is the library its record describes, built from ``spec``."""
    try:
        record = json.loads(Path(str(path) + _RECORD).read_text())
        identity = spec.identity()
        return (isinstance(record, dict) and {k: record.get(k) for k in identity} == identity
                and record.get("sha256") == file_sha256(path))
    except (OSError, ValueError):
        return False


def build(spec: Spec) -> Path:
    """Load the verified cached library of ``spec``, or build, load and publish a fresh one; its path.

    Raises whatever the build raises (no compiler, no ninja, a compile error).
    """
    folder = private_dir()
    path = target(spec, folder)
    if path.is_file() and verified(path, spec):
        torch.ops.load_library(str(path))
        return path
    # missing, unrecorded, altered or stale: rebuild from the sources, never load it
    from torch.utils import cpp_extension

    with tempfile.TemporaryDirectory(dir=folder, prefix="build-") as tmp:
        built = Path(cpp_extension.load(
            name=spec.name, sources=[str(s) for s in spec.sources], extra_cflags=list(spec.cflags),
            extra_ldflags=list(spec.ldflags), build_directory=tmp, is_python_module=False, verbose=False,
        ))
        record = Path(tmp) / (path.name + _RECORD)
        record.write_text(json.dumps({**spec.identity(), "sha256": file_sha256(built)}, indent=1) + "\n")
        # library first, then its record: a reader between the two sees a mismatch and rebuilds
        os.replace(built, path)
        os.replace(record, str(path) + _RECORD)
    return path


def compiler_missing() -> str | None:
    """Why no build can even start here (no C++ compiler, no ninja), or None."""
    from torch.utils import cpp_extension

    cxx = os.environ.get("CXX") or "c++"
    if shutil.which(cxx) is None and shutil.which("g++") is None and shutil.which("clang++") is None:
        return "no C++ compiler found (set CXX, or install g++ or clang++)"
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None

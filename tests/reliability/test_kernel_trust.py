"""Issue 19, item 10b: the compiled kernel library is verified (hash, versions, sources) before it is loaded,
and only from a directory that no other user can write.

The tests drive the very build-and-load code of :mod:`noisynn.kernels._build` (the one the
operators go through, ``torch.utils.cpp_extension`` included) with a one-function probe
library instead of the operators: it builds in seconds, and a process can load any number
of them (the operators' ``TORCH_LIBRARY`` can be registered only once per process).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from noisynn.kernels import _build

COMPILER = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
pytestmark = pytest.mark.skipif(COMPILER is None or not cpp_extension.is_ninja_available(),
                                reason="no C++ compiler or no ninja: nothing can be built")

PROBE = 'extern "C" int nn_version(void) { return 3; }\n'

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("%s", "w"); if (f) { fputs("ran", f); fclose(f); }
}
int nn_version(void) { return 3; }
"""


@pytest.fixture
def spec(tmp_path_factory) -> _build.Spec:
    source = tmp_path_factory.mktemp("probe") / "probe.cpp"
    source.write_text(PROBE)
    return _build.Spec(name="noisynn_trust_probe", sources=(source,), cflags=("-O0",))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NOISYNN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "kernels"


def _plant(target: Path, marker: Path, tmp: Path) -> None:
    """Replace ``target`` by a library whose constructor writes ``marker`` (and that claims the right version)."""
    src = tmp / "planted.c"
    src.write_text(PLANTED % marker)
    subprocess.run([shutil.which("cc") or COMPILER, "-shared", "-fPIC", "-x", "c", str(src), "-o", str(target)],
                   check=True, capture_output=True)


def _libraries(folder: Path, spec: _build.Spec) -> list[Path]:
    return sorted(folder.glob(f"{spec.name}_*{cpp_extension.LIB_EXT}"))


def _version(path: Path) -> int:
    return ctypes.CDLL(str(path)).nn_version()


def test_the_operators_spec_covers_every_source_and_has_no_native_flags():
    spec = _build.kernel_spec()
    names = {p.name for p in (*spec.sources, *spec.headers)}
    assert names == {p.name for p in _build.SOURCES.iterdir() if p.suffix in (".cpp", ".h")}
    assert {"ops.cpp", "kernels_impl.h"} <= names
    assert not [f for f in spec.cflags if f.startswith(("-march", "-mtune", "-mcpu"))]  # portable: runtime dispatch


def test_build_records_hash_versions_and_sources_in_a_private_dir(cache, spec):
    path = _build.build(spec)
    assert _version(path) == 3
    assert (cache.stat().st_mode & 0o777) == 0o700
    (so,) = _libraries(cache, spec)
    assert so == path
    record = json.loads(Path(str(so) + ".json").read_text())
    assert record["sha256"] == _build.file_sha256(so)
    assert record["package_version"] and record["kernel_version"] == _build.KERNEL_VERSION
    assert record["source_sha256"] == spec.identity()["source_sha256"] and record["torch_version"]
    assert _build.verified(so, spec)
    assert not [p for p in cache.iterdir() if p.is_dir()]  # no build folder left behind
    assert _build.build(spec) == so and _build.file_sha256(so) == record["sha256"]  # the cache is used as it is


def test_a_planted_library_at_the_cached_path_is_rebuilt_not_loaded(cache, spec, tmp_path):
    _build.build(spec)
    (so,) = _libraries(cache, spec)
    marker = tmp_path / "planted-code-ran"
    _plant(so, marker, tmp_path)
    planted = _build.file_sha256(so)
    assert not _build.verified(so, spec)

    path = _build.build(spec)
    assert not marker.exists(), "the planted library was loaded"
    assert path == so and _build.verified(so, spec)
    assert _version(so) == 3 and _build.file_sha256(so) != planted
    assert len(_libraries(cache, spec)) == 1  # rebuilt in place

    # a record rewritten to match the planted file still fails: the source hash is the package's
    _plant(so, marker, tmp_path)
    record = json.loads(Path(str(so) + ".json").read_text())
    Path(str(so) + ".json").write_text(json.dumps(dict(record, sha256=_build.file_sha256(so), source_sha256="0" * 64)))
    _build.build(spec)
    assert not marker.exists()
    assert _build.verified(so, spec)


def test_a_library_without_its_record_is_rebuilt(cache, spec, tmp_path):
    _build.build(spec)
    (so,) = _libraries(cache, spec)
    Path(str(so) + ".json").unlink()
    marker = tmp_path / "planted-code-ran"
    _plant(so, marker, tmp_path)
    _build.build(spec)
    assert not marker.exists() and _build.verified(so, spec)


def test_changed_sources_are_a_different_library(cache, spec):
    first = _build.build(spec)
    spec.sources[0].write_text(PROBE + "// changed\n")
    assert not _build.verified(first, spec)  # the record names the old sources
    assert _build.target(spec, cache) != first


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_directory_others_can_write_is_refused(cache, spec, tmp_path):
    _build.build(spec)
    (so,) = _libraries(cache, spec)
    marker = tmp_path / "planted-code-ran"
    _plant(so, marker, tmp_path)
    record = Path(str(so) + ".json")
    record.write_text(json.dumps({**spec.identity(), "sha256": _build.file_sha256(so)}))  # a perfect forgery
    cache.chmod(0o777)
    try:
        with pytest.warns(RuntimeWarning, match="writable by other users"):
            path = _build.build(spec)
        assert not marker.exists(), "a library from a world-writable directory was loaded"
        assert path.parent != cache and _version(path) == 3
    finally:
        cache.chmod(0o700)

"""Issue 19, item 10b: the compiled kernel library is verified (hash, version, source) before it is loaded,
and only from a directory that no other user can write."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from noisynn import _fast

COMPILER = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler")

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("%s", "w"); if (f) { fputs("ran", f); fclose(f); }
}
int nn_version(void) { return %d; }
"""


def _plant(target: Path, marker: Path, tmp: Path) -> None:
    """Replace ``target`` by a library whose constructor writes ``marker`` (and that claims the right version)."""
    src = tmp / "planted.c"
    src.write_text(PLANTED % (marker, _fast._VERSION))
    subprocess.run([COMPILER, "-shared", "-fPIC", str(src), "-o", str(target)], check=True, capture_output=True)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NOISYNN_CACHE_DIR", str(tmp_path / "cache"))
    # the same build path at -O0 (0.3 s instead of 2 s): these libraries only answer nn_version()
    monkeypatch.setattr(_fast, "_FLAGS", ("-O0", "-w", "-std=gnu11", "-shared", "-fPIC"))
    return tmp_path / "cache" / "kernels"


def _libraries(folder: Path) -> list[Path]:
    return sorted(folder.glob("noisynn_fast_*.so"))


def test_build_records_hash_version_and_source_in_a_private_dir(cache):
    lib = _fast._build()
    assert lib.nn_version() == _fast._VERSION
    assert (cache.stat().st_mode & 0o777) == 0o700
    (so,) = _libraries(cache)
    record = json.loads(Path(str(so) + ".json").read_text())
    assert record["sha256"] == _fast._file_sha256(so)
    assert record["package_version"] and record["kernel_version"] == _fast._VERSION
    assert record["source_sha256"] == _fast._identity()["source_sha256"]
    assert _fast._verified(so)
    assert not [p for p in cache.iterdir() if p.is_dir()]  # no build folder left behind


def test_a_planted_library_at_the_cached_path_is_rebuilt_not_loaded(cache, tmp_path):
    _fast._build()
    (so,) = _libraries(cache)
    good = _fast._file_sha256(so)
    marker = tmp_path / "planted-code-ran"
    _plant(so, marker, tmp_path)
    assert not _fast._verified(so)

    lib = _fast._build()
    assert not marker.exists(), "the planted library was loaded"
    assert lib.nn_version() == _fast._VERSION
    assert _fast._verified(so) and _fast._file_sha256(so) == good  # rebuilt in place

    # a record rewritten to match the planted file still fails: the source hash is the package's
    _plant(so, marker, tmp_path)
    record = json.loads(Path(str(so) + ".json").read_text())
    Path(str(so) + ".json").write_text(json.dumps(dict(record, sha256=_fast._file_sha256(so), source_sha256="0" * 64)))
    _fast._build()
    assert not marker.exists()


def test_a_library_without_its_record_is_rebuilt(cache, tmp_path):
    _fast._build()
    (so,) = _libraries(cache)
    Path(str(so) + ".json").unlink()
    marker = tmp_path / "planted-code-ran"
    _plant(so, marker, tmp_path)
    _fast._build()
    assert not marker.exists() and _fast._verified(so)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_directory_others_can_write_is_refused(cache, tmp_path):
    _fast._build()
    (so,) = _libraries(cache)
    marker = tmp_path / "planted-code-ran"
    _plant(so, marker, tmp_path)
    record = Path(str(so) + ".json")
    record.write_text(json.dumps({**_fast._identity(), "sha256": _fast._file_sha256(so)}))  # a perfect forgery
    cache.chmod(0o777)
    with pytest.warns(RuntimeWarning, match="writable by other users"):
        lib = _fast._build()
    assert not marker.exists(), "a library from a world-writable directory was loaded"
    assert lib.nn_version() == _fast._VERSION
    cache.chmod(0o700)

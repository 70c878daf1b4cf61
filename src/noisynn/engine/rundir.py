"""The run directory of a sweep (``--out DIR``): every file name and folder of it, in one place.

A run directory holds::

    DIR/results.sqlite                      the results store (points, epochs, curves, meta)
    DIR/.noisynn.lock                       the writer's lock (noisynn.engine.rundir_lock)
    DIR/models/KEY.safetensors              a trained model's checkpoint (KEY: TrainSpec.key)
    DIR/models/KEY.json                     its metadata for people (noisynn.engine.checkpoint)
    DIR/models/KEY.best.safetensors         early stopping: the best epoch's weights
    DIR/models/KEY.last.safetensors         early stopping: the last epoch's state
    DIR/models/.KEY....work/                scratch folders of training tasks run away from the driver
    DIR/adversarial/transfer-TAG.safetensors  adversarial examples made once, re-read by a re-run
    DIR/report/                             the report's default folder (noisynn report DIR)

With ``--storage STORAGE`` the checkpoints live in ``STORAGE/models`` and ``DIR/models`` is a
link to it (:meth:`RunDir.models_for`). Everything that reads or writes one of these files
asks :class:`RunDir` (or the functions below, for a checkpoint given by its path) for its
name; no other module spells them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from noisynn.errors import NoisynnError

__all__ = ["RunDir", "STORE_NAME", "LOCK_NAME", "MODELS_NAME", "CHECKPOINT_SUFFIX", "checkpoint_in", "best_path",
           "last_path", "is_main_checkpoint", "is_last_copy", "scratch_folder", "scratch_folders"]

STORE_NAME = "results.sqlite"
LOCK_NAME = ".noisynn.lock"
MODELS_NAME = "models"
CHECKPOINT_SUFFIX = ".safetensors"
_BEST = ".best" + CHECKPOINT_SUFFIX
_LAST = ".last" + CHECKPOINT_SUFFIX
_SCRATCH = ".work"


def checkpoint_in(folder: str | Path, key: str) -> Path:
    """The checkpoint of the model ``key`` in the models folder ``folder``: ``folder/KEY.safetensors``."""
    return Path(folder) / f"{key}{CHECKPOINT_SUFFIX}"


def best_path(checkpoint: str | Path) -> Path:
    """Where early stopping keeps the best epoch's weights: ``NAME.best.safetensors`` beside ``NAME.safetensors``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + _BEST)


def last_path(checkpoint: str | Path) -> Path:
    """Where a stopped run keeps its last epoch's state (to go on if the cap is raised): ``NAME.last.safetensors``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + _LAST)


def is_main_checkpoint(path: str | Path) -> bool:
    """True for a model's checkpoint itself, False for early stopping's copies and other files."""
    name = Path(path).name
    return name.endswith(CHECKPOINT_SUFFIX) and not name.endswith((_BEST, _LAST))


def is_last_copy(path: str | Path) -> bool:
    """True for early stopping's ``NAME.last.safetensors`` (a plain copy: it has no ``.json`` sidecar)."""
    return Path(path).name.endswith(_LAST)


def scratch_folder(beside: Path) -> Path:
    """The name of a new private scratch folder next to ``beside``: ``.NAME.<host>-<pid>-<random>.work``.

    The same file system as ``beside``, so the driver renames the task's files from it.
    """
    from noisynn.engine.atomic import unique_tmp

    return unique_tmp(beside).with_suffix(_SCRATCH)


def scratch_folders(folder: Path) -> list[Path]:
    """The scratch folders of training tasks in the models folder ``folder`` (none if it cannot be read)."""
    with contextlib.suppress(OSError):
        return sorted(folder.glob(f".*{_SCRATCH}"))
    return []


@dataclass(frozen=True)
class RunDir:
    """A sweep's run directory and the names of everything in it (see the module doc).

    Naming a path creates nothing: ``RunDir(DIR).store`` is where the store is or will be.

    Attributes:
        path: the directory (``--out``).
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def store(self) -> Path:
        """The results store: ``DIR/results.sqlite``."""
        return self.path / STORE_NAME

    @property
    def lock(self) -> Path:
        """The writer's lock file: ``DIR/.noisynn.lock``."""
        return self.path / LOCK_NAME

    @property
    def models(self) -> Path:
        """The checkpoints' folder: ``DIR/models`` (a link to ``STORAGE/models`` with ``--storage``)."""
        return self.path / MODELS_NAME

    @property
    def adversarial(self) -> Path:
        """The cache of adversarial examples: ``DIR/adversarial``."""
        return self.path / "adversarial"

    @property
    def report(self) -> Path:
        """The report's default folder: ``DIR/report``."""
        return self.path / "report"

    def model_checkpoint(self, key: str) -> Path:
        """The checkpoint of model ``key``: ``DIR/models/KEY.safetensors``."""
        return checkpoint_in(self.models, key)

    def best_checkpoint(self, key: str) -> Path:
        """Early stopping's best weights of model ``key``: ``DIR/models/KEY.best.safetensors``."""
        return best_path(self.model_checkpoint(key))

    def last_checkpoint(self, key: str) -> Path:
        """Early stopping's last state of model ``key``: ``DIR/models/KEY.last.safetensors``."""
        return last_path(self.model_checkpoint(key))

    def model_checkpoints(self) -> list[Path]:
        """Every model's checkpoint in ``DIR/models``, sorted by name (early stopping's copies left out)."""
        if not self.models.is_dir():
            return []
        return sorted(p for p in self.models.iterdir() if is_main_checkpoint(p))

    def adversarial_examples(self, tag: str) -> Path:
        """The cached transfer examples of attack ``tag``: ``DIR/adversarial/transfer-TAG.safetensors``."""
        return self.adversarial / f"transfer-{tag}{CHECKPOINT_SUFFIX}"

    def existing_store(self, error: type[NoisynnError] = NoisynnError) -> Path:
        """The store of a run directory that must have one (to read it).

        Raises:
            error: ``DIR`` has no results store (one line saying what to give instead).
        """
        if not self.store.is_file():
            raise error(f"{self.path} has no {STORE_NAME}: give the --out directory of a sweep")
        return self.store

    def models_for(self, storage: str | Path | None) -> Path:
        """Where the checkpoints go: ``DIR/models``, or ``STORAGE/models`` linked from ``DIR/models``.

        Raises:
            NoisynnError: ``STORAGE/models`` cannot be created, or ``DIR/models`` already holds checkpoints.
        """
        local = self.models
        if not storage:
            return local
        shared = Path(storage).resolve() / MODELS_NAME
        if shared == local.resolve():
            return local
        try:
            shared.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NoisynnError(f"--storage {storage}: cannot create {shared} ({exc.strerror or exc})") from None
        if local.is_symlink() and local.resolve() == shared:
            return shared
        if local.exists() or local.is_symlink():
            raise NoisynnError(f"{local} already holds this run's checkpoints: move them to {shared} and delete it, "
                               "or run without --storage")
        local.symlink_to(shared, target_is_directory=True)  # results and report find the models where they always do
        return shared

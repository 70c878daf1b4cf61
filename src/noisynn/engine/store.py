"""The results store: one SQLite file per run directory (``DIR/results.sqlite``).

Every evaluated point and every finished training epoch is a row, written in its own
transaction the moment it is known, so a killed run loses at most the point it was
computing. Re-running skips what is already here.

Schema (also in docs/guide/evaluation.md):

``points``: one row per evaluated grid point
    ``experiment, model, dataset, noise, sigma_train, sigma_val, votes`` (1 = a single
    noisy inference, K > 1 = the mode of K), ``n_runs`` (independent noisy passes over
    the whole test set), ``seed``, ``accuracy`` (mean over runs, in [0, 1]),
    ``stderr`` (standard error of that mean), ``seconds``, ``checkpoint`` (SHA-256 of
    the evaluated weights), ``kind`` (``noisy`` | ``vote`` | ``adversarial``...),
    ``created``, ``measurement`` (canonical JSON of how it was measured: runs, target,
    limit, trials, the noise configuration and the SHA-256 of the test data; a point is
    reused only when its weights *and* its measurement match, else it is measured again
    with a message saying what changed; NULL in rows of older versions, which are
    therefore measured again).
``runs``: the accuracy of every single run of a point (``point_id, run, accuracy``).
``epochs``: learning curves, one row per finished training epoch
    (``experiment, model, noise, sigma_train, seed, epoch, batches, train_loss,
    train_accuracy, val_loss, val_accuracy, seconds, checkpoint``, and with early stopping
    ``holdout_loss, holdout_accuracy``: clean, on the held-out training samples; NULL
    without early stopping).
``stopping``: one row per model trained with early stopping (``experiment, model,
    noise, sigma_train, seed, monitor, epochs_run, best_epoch, best_score, stopped``
    (``patience``: no improvement for that many epochs; ``cap``: the epoch cap),
    ``checkpoint``: SHA-256 of the best weights, the ones evaluated).
``curve``: learning curves within epochs (paper 2, fig. 3), one row every
    ``curve_every`` mini-batches when training asks for it (``experiment, model, noise,
    sigma_train, seed, batches`` (mini-batches so far), ``epoch, val_loss,
    val_accuracy`` (clean, on the first ``curve_samples`` test samples)).
``chips``: a hardware point's chips (issue 17; :mod:`noisynn.engine.hardware_tasks`), one row
    per ``points`` row of kind ``chips-*`` (``point_id, hardware`` (the chip model's label),
    ``t`` (seconds after programming; also the point's ``sigma_val``), ``compensation`` (1, 0,
    NULL: the model has none), ``n_chips, n_reads`` (reads per chip; K for a voting point),
    ``chip_spread`` (sample std of the per-chip means), ``read_spread`` (mean over chips of
    the sample std of a chip's reads; 0 for a voting point), ``per_chip`` (JSON list of
    the per-chip means)); the point's ``runs`` are ``chip * n_reads + read`` (one per chip
    for a voting point).
``meta``: ``key, value`` pairs: which experiment and profile own this directory.

Opening: ``ResultStore(path)`` creates or migrates the file (WAL journal, so readers
never wait for a writer); ``ResultStore(path, readonly=True)`` (what ``results`` and
``report`` use) opens it with ``mode=ro`` and writes nothing at all, so a finished run
directory on a read-only disk can be read. Every write is one ``BEGIN IMMEDIATE``
transaction; a store locked by another process for longer than the busy timeout
(``NOISYNN_STORE_TIMEOUT`` seconds, default 60), a file with corrupt pages and a schema
lacking a column each raise a one-line :class:`StoreError` naming the file, what
happened and what was kept. Adding a point that another process added meanwhile (two
identical sweeps) keeps the first one: measuring twice never fails.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from noisynn.errors import NoisynnError

__all__ = ["ResultStore", "PointKey", "Point", "measurement", "EpochRow", "CurveRow", "StoppingRow", "ChipRow",
           "StoreError", "sigma_key"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL, model TEXT NOT NULL, dataset TEXT NOT NULL, noise TEXT NOT NULL,
    sigma_train REAL NOT NULL, sigma_val REAL NOT NULL, votes INTEGER NOT NULL,
    kind TEXT NOT NULL, seed INTEGER NOT NULL,
    n_runs INTEGER NOT NULL, accuracy REAL NOT NULL, stderr REAL NOT NULL,
    seconds REAL NOT NULL, checkpoint TEXT NOT NULL, created REAL NOT NULL, measurement TEXT,
    UNIQUE (experiment, model, dataset, noise, sigma_train, sigma_val, votes, kind, seed)
);
CREATE TABLE IF NOT EXISTS runs (
    point_id INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,
    run INTEGER NOT NULL, accuracy REAL NOT NULL, PRIMARY KEY (point_id, run)
);
CREATE TABLE IF NOT EXISTS epochs (
    experiment TEXT NOT NULL, model TEXT NOT NULL, noise TEXT NOT NULL,
    sigma_train REAL NOT NULL, seed INTEGER NOT NULL, epoch INTEGER NOT NULL,
    batches INTEGER NOT NULL, train_loss REAL NOT NULL, train_accuracy REAL NOT NULL,
    val_loss REAL NOT NULL, val_accuracy REAL NOT NULL, seconds REAL NOT NULL,
    checkpoint TEXT NOT NULL, holdout_loss REAL, holdout_accuracy REAL,
    PRIMARY KEY (experiment, model, noise, sigma_train, seed, epoch)
);
CREATE TABLE IF NOT EXISTS stopping (
    experiment TEXT NOT NULL, model TEXT NOT NULL, noise TEXT NOT NULL,
    sigma_train REAL NOT NULL, seed INTEGER NOT NULL, monitor TEXT NOT NULL,
    epochs_run INTEGER NOT NULL, best_epoch INTEGER NOT NULL, best_score REAL NOT NULL,
    stopped TEXT NOT NULL, checkpoint TEXT NOT NULL,
    PRIMARY KEY (experiment, model, noise, sigma_train, seed)
);
CREATE TABLE IF NOT EXISTS curve (
    experiment TEXT NOT NULL, model TEXT NOT NULL, noise TEXT NOT NULL,
    sigma_train REAL NOT NULL, seed INTEGER NOT NULL, batches INTEGER NOT NULL,
    epoch INTEGER NOT NULL, val_loss REAL NOT NULL, val_accuracy REAL NOT NULL,
    PRIMARY KEY (experiment, model, noise, sigma_train, seed, batches)
);
CREATE TABLE IF NOT EXISTS chips (
    point_id INTEGER PRIMARY KEY REFERENCES points(id) ON DELETE CASCADE,
    hardware TEXT NOT NULL, t REAL NOT NULL, compensation INTEGER,
    n_chips INTEGER NOT NULL, n_reads INTEGER NOT NULL,
    chip_spread REAL NOT NULL, read_spread REAL NOT NULL, per_chip TEXT NOT NULL
);
"""


class StoreError(NoisynnError):
    """The results database is unreadable, locked, of another schema, or belongs to another experiment."""


ENV_TIMEOUT = "NOISYNN_STORE_TIMEOUT"
"""Environment variable: seconds to wait for a store locked by another process (default 60)."""
MIGRATABLE = {"epochs": ("holdout_loss", "holdout_accuracy"), "points": ("measurement",)}
"""Columns newer than some stores on disk, added (NULL in old rows) when a store is opened for writing."""


def _timeout() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_TIMEOUT, "60")))
    except ValueError:
        raise StoreError(f"{ENV_TIMEOUT}={os.environ[ENV_TIMEOUT]!r} is not a number of seconds") from None


@functools.lru_cache(maxsize=1)
def _expected_columns() -> dict[str, list[str]]:
    """Every table of :data:`SCHEMA` and its columns."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    conn.close()
    return columns


def _sql_error(path: Path, exc: sqlite3.Error, timeout: float, writing: bool) -> StoreError:
    """The one-line error for a failed SQLite operation: the file, what happened, what was kept."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    kept = ("nothing was written by this command; every point and epoch already in it is kept" if writing
            else "nothing in it was changed")
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return StoreError(f"{path} is locked by another process for more than {timeout:g} s ({text}); {kept}: wait "
                          f"for that process to finish (or stop it), or raise {ENV_TIMEOUT}, then run again")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path} is read-only ({text}); {kept}: use a writable --out directory")
    if "malformed" in text or "not a database" in text or "corrupt" in text or "disk I/O" in text:
        return StoreError(f"{path} is corrupt ({text}); {kept}: move it away (or restore it) and run again; "
                          f"the checkpoints in models/ are separate and intact")
    return StoreError(f"{path}: {text}; {kept}")


def sigma_key(sigma: float) -> float:
    """A sigma as a key of the store: rounded to 9 decimals, so 0.30000000000000004 and 0.3 are one point.

    Every comparison of a sigma with the store's ``sigma_train`` / ``sigma_val`` columns goes through it.
    """
    return round(float(sigma), 9)


def measurement(test=None, **settings) -> str:
    """Everything that defines how a point was measured, as canonical JSON: its identity beside the key.

    ``settings`` are the protocol (``runs``, ``target``, ``limit``, ``trials``, the noise
    model's configuration ...); ``test`` is the evaluated split itself (an object with
    tensors ``x`` and ``y``), recorded by the SHA-256 of its content, so a point measured
    on other data (a changed file, another limit, a partial copy) is never reused.
    """
    if test is not None:
        import torch

        digest = hashlib.sha256()
        for tensor in (test.x, test.y):
            t = tensor.detach().contiguous().cpu()
            digest.update(str((tuple(t.shape), str(t.dtype))).encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        settings["test_sha256"] = digest.hexdigest()
    return json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))


def _differences(old: str | None, new: str) -> str:
    """What differs between two :func:`measurement` strings, for a message."""
    if not old:
        return "it was measured by an older noisynn that did not record how"
    a, b = json.loads(old), json.loads(new)
    changed = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" if k != "test_sha256" else "the test data changed"
               for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(changed) or "its record differs"


@dataclass(frozen=True)
class PointKey:
    """What identifies a grid point."""

    experiment: str
    model: str
    dataset: str
    noise: str
    sigma_train: float
    sigma_val: float
    votes: int = 1
    kind: str = "noisy"
    seed: int = 0

    def normalised(self) -> PointKey:
        return PointKey(self.experiment, self.model, self.dataset, self.noise, sigma_key(self.sigma_train),
                        sigma_key(self.sigma_val), int(self.votes), self.kind, int(self.seed))


@dataclass(frozen=True)
class Point:
    """A finished grid point: its key and its measurement."""

    key: PointKey
    n_runs: int
    accuracy: float
    stderr: float
    seconds: float
    checkpoint: str
    run_accuracies: tuple[float, ...] = ()
    measurement: str = ""
    """How the point was measured (:func:`measurement`): a point is reused only when this matches."""
    notes: tuple[str, ...] = ()
    """Why an older point of this key was measured again (for the log; not stored)."""

    def as_row(self) -> dict:
        row = asdict(self.key)
        row.update(n_runs=self.n_runs, accuracy=self.accuracy, stderr=self.stderr,
                   seconds=self.seconds, checkpoint=self.checkpoint)
        return row


@dataclass(frozen=True)
class EpochRow:
    """One finished training epoch (a point of a learning curve)."""

    experiment: str
    model: str
    noise: str
    sigma_train: float
    seed: int
    epoch: int
    batches: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    checkpoint: str
    holdout_loss: float | None = None
    holdout_accuracy: float | None = None


@dataclass(frozen=True)
class StoppingRow:
    """Where early stopping stopped one model, and why."""

    experiment: str
    model: str
    noise: str
    sigma_train: float
    seed: int
    monitor: str
    epochs_run: int
    best_epoch: int
    best_score: float
    stopped: str
    checkpoint: str


@dataclass(frozen=True)
class CurveRow:
    """A learning-curve point inside an epoch: clean validation after ``batches`` mini-batches."""

    experiment: str
    model: str
    noise: str
    sigma_train: float
    seed: int
    batches: int
    epoch: int
    val_loss: float
    val_accuracy: float


@dataclass(frozen=True)
class ChipRow:
    """The chips of a hardware point (the ``chips`` table): written with its point, in one transaction."""

    hardware: str
    t: float
    compensation: bool | None
    n_chips: int
    n_reads: int
    chip_spread: float
    read_spread: float
    per_chip: tuple[float, ...]


class ResultStore:
    """Transactional access to ``results.sqlite``.

    Args:
        path: the database file (created with its schema if missing, unless ``readonly``).
        readonly: open with ``mode=ro``: no journal switch, no CREATE, no migration, no write
            of any kind (a table missing from an old store reads as empty).
        timeout: seconds to wait for a lock held by another process (default
            ``$NOISYNN_STORE_TIMEOUT``, else 60).

    Raises:
        StoreError: the file is missing (``readonly``), not a results database, corrupt,
            locked for longer than ``timeout``, or lacks a column of this version's schema.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout: float | None = None) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.timeout = _timeout() if timeout is None else float(timeout)
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open()
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._check_schema()  # before anything is written: an old or foreign file stays as it is
            if not readonly:
                self._conn.execute("PRAGMA journal_mode=WAL")
                with self._transaction():
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._migrate()
        except sqlite3.Error as exc:
            self._close_quietly()
            raise _sql_error(self.path, exc, self.timeout, not readonly) from None
        except StoreError:
            self._close_quietly()
            raise

    @property
    def _db(self) -> sqlite3.Connection:
        """The open connection (set by ``__init__``, which raises if it cannot open one)."""
        if self._conn is None:
            raise StoreError(f"{self.path} is not open")
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if not self.readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {self.path.parent} ({exc.strerror or exc}): use a writable --out "
                                 f"directory") from None
            return sqlite3.connect(self.path, timeout=self.timeout)
        if not self.path.is_file():
            raise StoreError(f"{self.path} not found: give the --out directory of a sweep")
        uri = "file:" + urllib.parse.quote(str(self.path.resolve()))
        conn = None
        try:
            conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=self.timeout)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as exc:
            if conn is not None:
                conn.close()
            wal = Path(str(self.path) + "-wal")
            if "unable to open" not in str(exc) or (wal.exists() and wal.stat().st_size > 0):
                raise
        # A WAL store in a folder we cannot write, with no -shm to share: nobody can be writing
        # it, so it is read as an immutable file (no locks, no -shm).
        return sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, timeout=self.timeout)

    def _migrate(self) -> None:
        """Add the columns newer than a store written by an older version (NULL in its old rows)."""
        for table, columns in MIGRATABLE.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column not in have:
                    kind = "TEXT" if column == "measurement" else "REAL"
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def _check_schema(self) -> None:
        """Refuse a store whose tables lack columns this version reads and writes (one line, nothing changed).

        Tables and :data:`MIGRATABLE` columns that are missing are created afterwards when
        writing; read-only, a missing table reads as empty (a TEMP table, in memory).
        """
        self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads page 1: "not a database"?
        for table, expected in _expected_columns().items():
            have = [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]
            if not have:
                if self.readonly:
                    columns = SCHEMA.split(f"CREATE TABLE IF NOT EXISTS {table} ")[1].split(";")[0]
                    self._db.execute(f"CREATE TEMP TABLE {table} {columns}")  # in memory, not in the file
                continue
            missing = [c for c in expected if c not in have and c not in MIGRATABLE.get(table, ())]
            if missing:
                raise StoreError(
                    f"{self.path} was written by another version of noisynn: table {table} lacks column(s) "
                    f"{', '.join(missing)}; nothing in it was changed: move it away (or use another --out) to run "
                    f"again, or read it with sqlite3")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` write transaction (the lock is taken up front: no check-then-insert race)."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only: nothing can be written to it")
        try:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            self._db.commit()
        except BaseException:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
            raise

    @contextlib.contextmanager
    def _errors(self, writing: bool) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise _sql_error(self.path, exc, self.timeout, writing) from None

    def _close_quietly(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ownership -----------------------------------------------------------------
    def claim(self, **meta: str) -> None:
        """Record which experiment owns this store, or check that it is the same one.

        Raises:
            StoreError: the store already holds another experiment under one of these keys.
        """
        with self._errors(True), self._transaction():
            for key, value in meta.items():
                row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES (?, ?)", (key, str(value)))
                elif row[0] != str(value):
                    raise StoreError(
                        f"{self.path.parent} holds {key} {row[0]!r}, not {value!r}: use another --out directory"
                    )

    def meta(self) -> dict[str, str]:
        with self._errors(False):
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    # -- points --------------------------------------------------------------------
    _WHERE = ("experiment=? AND model=? AND dataset=? AND noise=? AND sigma_train=? AND sigma_val=? "
              "AND votes=? AND kind=? AND seed=?")

    @staticmethod
    def _key_args(key: PointKey) -> tuple:
        k = key.normalised()
        return (k.experiment, k.model, k.dataset, k.noise, k.sigma_train, k.sigma_val, k.votes, k.kind, k.seed)

    def has_point(self, key: PointKey, checkpoint: str | None = None, measurement: str | None = None,
                  on_stale: Callable[[str], None] | None = None) -> bool:
        """True if the point is done (with these weights and this measurement, when given).

        A point measured on other weights (the model was trained further since), or in
        another way (other runs, limit, test data or noise configuration: ``measurement``),
        is stale: it is deleted so that it is measured again, and ``on_stale`` is told why.
        """
        with self._errors(False):
            row = self._db.execute(f"SELECT id, checkpoint, measurement FROM points WHERE {self._WHERE}",
                                   self._key_args(key)).fetchone()
        if row is None:
            return False
        reason = None
        if checkpoint is not None and row[1] != checkpoint:
            reason = "it was measured on other weights"
        elif measurement is not None and row[2] != measurement:
            reason = _differences(row[2], measurement)
        if reason is None:
            return True
        with self._errors(True), self._transaction():
            self._db.execute("DELETE FROM points WHERE id = ?", (row[0],))
        if on_stale is not None:
            k = key.normalised()
            on_stale(f"{k.experiment} {k.kind} point sigma_train {k.sigma_train:g}, sigma_val {k.sigma_val:g}"
                     f"{f', K={k.votes}' if k.kind == 'vote' else ''}: {reason}; measured again")
        return False

    def point_record(self, key: PointKey) -> tuple[str, str | None] | None:
        """``(checkpoint, measurement)`` of the point ``key``, or None if it is not in the store."""
        with self._errors(False):
            row = self._db.execute(f"SELECT checkpoint, measurement FROM points WHERE {self._WHERE}",
                                   self._key_args(key)).fetchone()
        return None if row is None else (row[0], row[1])

    def replace_points(self, points: Iterable[Point]) -> None:
        """Write several points in one transaction, replacing any with the same keys."""
        with self._errors(True), self._transaction():
            for point in points:
                self._db.execute(f"DELETE FROM points WHERE {self._WHERE}", self._key_args(point.key))
                self._insert(point)

    def add_point(self, point: Point) -> bool:
        """Write one finished point and its runs in one transaction; False if it was there already.

        Idempotent under concurrency: the check and the insert are one ``BEGIN IMMEDIATE``
        transaction. A point with the same key measured on the same weights (another
        process measured it meanwhile) is kept as it is; one measured on other weights
        (stale) is replaced.
        """
        with self._errors(True), self._transaction():
            row = self._db.execute(f"SELECT id, checkpoint, measurement FROM points WHERE {self._WHERE}",
                                   self._key_args(point.key)).fetchone()
            if row is not None and row[1] == point.checkpoint and (row[2] or "") == point.measurement:
                return False
            if row is not None:
                self._db.execute("DELETE FROM points WHERE id = ?", (row[0],))
            self._insert(point)
        return True

    def _insert(self, point: Point) -> None:
        k = point.key.normalised()
        cur = self._db.execute(
            "INSERT INTO points (experiment, model, dataset, noise, sigma_train, sigma_val, votes, kind, seed, "
            "n_runs, accuracy, stderr, seconds, checkpoint, created, measurement) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (k.experiment, k.model, k.dataset, k.noise, k.sigma_train, k.sigma_val, k.votes, k.kind, k.seed,
             point.n_runs, point.accuracy, point.stderr, point.seconds, point.checkpoint, time.time(),
             point.measurement or None),
        )
        self._db.executemany(
            "INSERT INTO runs VALUES (?, ?, ?)",
            [(cur.lastrowid, i, acc) for i, acc in enumerate(point.run_accuracies)],
        )

    def points(self, *, kind: str | None = None, experiment: str | None = None) -> list[dict]:
        """All points as dicts (ordered by experiment, noise, sigma_train, sigma_val, votes)."""
        sql = "SELECT * FROM points"
        where, args = [], []
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if experiment is not None:
            where.append("experiment = ?")
            args.append(experiment)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY experiment, kind, noise, sigma_train, sigma_val, votes, seed"
        return self._dicts(sql, args)

    def run_accuracies(self, point_id: int) -> list[float]:
        with self._errors(False):
            rows = self._db.execute("SELECT accuracy FROM runs WHERE point_id = ? ORDER BY run", (point_id,))
            return [r[0] for r in rows]

    # -- chips (hardware points) ---------------------------------------------------
    def replace_chip_points(self, pairs: Iterable[tuple[Point, ChipRow]]) -> None:
        """Write hardware points and their ``chips`` rows in one transaction, replacing any with the same keys."""
        with self._errors(True), self._transaction():
            for point, chip in pairs:
                self._db.execute(f"DELETE FROM points WHERE {self._WHERE}", self._key_args(point.key))
                self._insert(point)
                point_id = self._db.execute(f"SELECT id FROM points WHERE {self._WHERE}",
                                            self._key_args(point.key)).fetchone()[0]
                self._db.execute(
                    "INSERT INTO chips VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (point_id, chip.hardware, float(chip.t),
                     None if chip.compensation is None else int(chip.compensation), chip.n_chips, chip.n_reads,
                     chip.chip_spread, chip.read_spread, json.dumps(list(chip.per_chip))))

    def chip_points(self, experiment: str | None = None) -> list[dict]:
        """The hardware points with their ``chips`` row (``compensation`` as True/False/None, ``per_chip`` a list)."""
        where, args = ("WHERE p.experiment = ? ", [experiment]) if experiment is not None else ("", [])
        rows = self._dicts("SELECT p.*, c.hardware, c.t, c.compensation, c.n_chips, c.n_reads, c.chip_spread, "
                           f"c.read_spread, c.per_chip FROM points p JOIN chips c ON c.point_id = p.id {where}"
                           "ORDER BY p.experiment, p.kind, p.noise, p.sigma_train, c.t, p.votes", args)
        for row in rows:
            row["compensation"] = None if row["compensation"] is None else bool(row["compensation"])
            row["per_chip"] = json.loads(row["per_chip"])
        return rows

    # -- epochs --------------------------------------------------------------------
    def add_epoch(self, row: EpochRow) -> None:
        """Record a finished epoch (a re-run epoch after a kill replaces its row)."""
        self._upsert("epochs", row)

    def add_curve(self, row: CurveRow) -> None:
        """Record a learning-curve point (a re-run epoch after a kill replaces its points)."""
        self._upsert("curve", row)

    def set_stopping(self, row: StoppingRow) -> None:
        """Record (or replace) where early stopping stopped a model."""
        self._upsert("stopping", row)

    def forget_training(self, experiment: str, model: str, noise: str, sigma_train: float, seed: int) -> int:
        """Delete one model's epoch, learning-curve and stopping rows; return how many epoch rows went.

        For a model trained again from scratch (its checkpoint is gone): the old rows
        describe weights that no longer exist, and a new run that stops at another epoch
        would otherwise leave some of them beside its own. Its points name the old
        weights' hash and are measured again.
        """
        args = (experiment, model, noise, sigma_key(sigma_train), seed)
        where = "experiment = ? AND model = ? AND noise = ? AND sigma_train = ? AND seed = ?"
        with self._errors(True), self._transaction():
            gone = self._db.execute(f"DELETE FROM epochs WHERE {where}", args).rowcount
            self._db.execute(f"DELETE FROM curve WHERE {where}", args)
            self._db.execute(f"DELETE FROM stopping WHERE {where}", args)
        return gone

    def stopping(self, experiment: str | None = None) -> list[dict]:
        """The early-stopping rows (ordered by noise, sigma_train, seed)."""
        where, args = ("WHERE experiment = ? ", [experiment]) if experiment is not None else ("", [])
        return self._dicts(f"SELECT * FROM stopping {where}ORDER BY experiment, noise, sigma_train, seed", args)

    def _upsert(self, table: str, row: EpochRow | CurveRow | StoppingRow) -> None:
        values = asdict(row)
        values["sigma_train"] = sigma_key(values["sigma_train"])
        with self._errors(True), self._transaction():
            self._db.execute(
                f"INSERT OR REPLACE INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )

    def curve(self, experiment: str | None = None) -> list[dict]:
        """The learning-curve points (ordered by noise, sigma_train, seed, batches)."""
        where, args = ("WHERE experiment = ? ", [experiment]) if experiment is not None else ("", [])
        return self._dicts(f"SELECT * FROM curve {where}ORDER BY experiment, noise, sigma_train, seed, batches", args)

    def epochs(self, experiment: str | None = None) -> list[dict]:
        if experiment is None:
            return self._dicts("SELECT * FROM epochs ORDER BY experiment, noise, sigma_train, seed, epoch", [])
        return self._dicts(
            "SELECT * FROM epochs WHERE experiment = ? ORDER BY noise, sigma_train, seed, epoch", [experiment]
        )

    def _dicts(self, sql: str, args: Sequence) -> list[dict]:
        with self._errors(False):
            cur = self._db.execute(sql, args)
            names = [c[0] for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def to_json(rows: Iterable[dict]) -> str:
    """Rows as a JSON array (for ``--json`` output)."""
    return json.dumps(list(rows), indent=2)

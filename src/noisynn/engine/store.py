"""The results store: one SQLite file per run directory (``DIR/results.sqlite``).

Every evaluated point and every finished training epoch is a row, written in its own
transaction the moment it is known, so a killed run loses at most the point it was
computing. Re-running skips what is already here.

Schema (also in the README):

``points``: one row per evaluated grid point
    ``experiment, model, dataset, noise, sigma_train, sigma_val, votes`` (1 = a single
    noisy inference, K > 1 = the mode of K), ``n_runs`` (independent noisy passes over
    the whole test set), ``seed``, ``accuracy`` (mean over runs, in [0, 1]),
    ``stderr`` (standard error of that mean), ``seconds``, ``checkpoint`` (SHA-256 of
    the evaluated weights), ``kind`` (``noisy`` | ``vote`` | ``adversarial``...),
    ``created``.
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
``meta``: ``key, value`` pairs: which experiment and profile own this directory.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from noisynn.errors import NoisynnError

__all__ = ["ResultStore", "PointKey", "Point", "EpochRow", "CurveRow", "StoppingRow", "StoreError"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL, model TEXT NOT NULL, dataset TEXT NOT NULL, noise TEXT NOT NULL,
    sigma_train REAL NOT NULL, sigma_val REAL NOT NULL, votes INTEGER NOT NULL,
    kind TEXT NOT NULL, seed INTEGER NOT NULL,
    n_runs INTEGER NOT NULL, accuracy REAL NOT NULL, stderr REAL NOT NULL,
    seconds REAL NOT NULL, checkpoint TEXT NOT NULL, created REAL NOT NULL,
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
"""


class StoreError(NoisynnError):
    """The results database is unreadable or belongs to another experiment."""


def _sigma(value: float) -> float:
    """Canonical form of a sigma as a key: 0.30000000000000004 and 0.3 are one point."""
    return round(float(value), 9)


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
        return PointKey(self.experiment, self.model, self.dataset, self.noise, _sigma(self.sigma_train),
                        _sigma(self.sigma_val), int(self.votes), self.kind, int(self.seed))


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


class ResultStore:
    """Transactional access to ``results.sqlite``.

    Args:
        path: the database file (created with its schema if missing).

    Raises:
        StoreError: the file exists but is not a noisynn results database.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=60.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._conn:
                self._conn.executescript(SCHEMA)
                self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a readable results database ({exc}); move it away or use another --out"
            ) from None

    def _migrate(self) -> None:
        """Add the columns newer than a store written by an older version (NULL in its old rows)."""
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(epochs)")}
        for column in ("holdout_loss", "holdout_accuracy"):
            if column not in have:
                self._conn.execute(f"ALTER TABLE epochs ADD COLUMN {column} REAL")

    def close(self) -> None:
        self._conn.close()

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
        with self._conn:
            for key, value in meta.items():
                row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                if row is None:
                    self._conn.execute("INSERT INTO meta VALUES (?, ?)", (key, str(value)))
                elif row[0] != str(value):
                    raise StoreError(
                        f"{self.path.parent} holds {key} {row[0]!r}, not {value!r}: use another --out directory"
                    )

    def meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    # -- points --------------------------------------------------------------------
    _WHERE = ("experiment=? AND model=? AND dataset=? AND noise=? AND sigma_train=? AND sigma_val=? "
              "AND votes=? AND kind=? AND seed=?")

    @staticmethod
    def _key_args(key: PointKey) -> tuple:
        k = key.normalised()
        return (k.experiment, k.model, k.dataset, k.noise, k.sigma_train, k.sigma_val, k.votes, k.kind, k.seed)

    def has_point(self, key: PointKey, checkpoint: str | None = None) -> bool:
        """True if the point is done (with these weights, when ``checkpoint`` is given).

        A point measured on other weights (the model was trained further since) is
        stale: it is deleted so that it is measured again.
        """
        row = self._conn.execute(f"SELECT id, checkpoint FROM points WHERE {self._WHERE}", self._key_args(key)).fetchone()
        if row is None:
            return False
        if checkpoint is not None and row[1] != checkpoint:
            with self._conn:
                self._conn.execute("DELETE FROM points WHERE id = ?", (row[0],))
            return False
        return True

    def replace_points(self, points: Iterable[Point]) -> None:
        """Write several points in one transaction, replacing any with the same keys."""
        with self._conn:
            for point in points:
                self._conn.execute(f"DELETE FROM points WHERE {self._WHERE}", self._key_args(point.key))
                self._insert(point)

    def add_point(self, point: Point) -> None:
        """Write one finished point and its runs in one transaction."""
        with self._conn:
            self._insert(point)

    def _insert(self, point: Point) -> None:
        k = point.key.normalised()
        cur = self._conn.execute(
            "INSERT INTO points (experiment, model, dataset, noise, sigma_train, sigma_val, votes, kind, seed, "
            "n_runs, accuracy, stderr, seconds, checkpoint, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (k.experiment, k.model, k.dataset, k.noise, k.sigma_train, k.sigma_val, k.votes, k.kind, k.seed,
             point.n_runs, point.accuracy, point.stderr, point.seconds, point.checkpoint, time.time()),
        )
        self._conn.executemany(
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
        rows = self._conn.execute("SELECT accuracy FROM runs WHERE point_id = ? ORDER BY run", (point_id,))
        return [r[0] for r in rows]

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

    def stopping(self, experiment: str | None = None) -> list[dict]:
        """The early-stopping rows (ordered by noise, sigma_train, seed)."""
        where, args = ("WHERE experiment = ? ", [experiment]) if experiment is not None else ("", [])
        return self._dicts(f"SELECT * FROM stopping {where}ORDER BY experiment, noise, sigma_train, seed", args)

    def _upsert(self, table: str, row: EpochRow | CurveRow | StoppingRow) -> None:
        values = asdict(row)
        values["sigma_train"] = _sigma(values["sigma_train"])
        with self._conn:
            self._conn.execute(
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
        cur = self._conn.execute(sql, args)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def to_json(rows: Iterable[dict]) -> str:
    """Rows as a JSON array (for ``--json`` output)."""
    return json.dumps(list(rows), indent=2)

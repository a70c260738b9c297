"""A training run's folder: its files, its epoch history, and resuming a run that was killed.

    with RunFolder("runs/fast") as run:      # one run at a time in a folder (a lock)
        run.prepare()                        # tidy up; keep the epochs the backup holds
        recipe = run.settle(asked, recipe)   # a resumed run keeps the recipe it started with
        initial_epoch = run.resume(model)    # the backup's weights, or 0 for a fresh run
        model.fit(..., initial_epoch=initial_epoch, callbacks=[..., run.backup_callback()])
        run.finish(model, record)            # final.keras and history.json, then no backup

The files, each written atomically (`storage`), so that a kill at any moment leaves either
the old complete file or the new one:

- `best.keras`: the model with the best validation accuracy so far;
- `history.csv`: one row per epoch, appended as training goes (Keras's `CSVLogger`);
- `backup/`: the last completed epoch's weights and optimiser state (`EpochBackup`), and
  `settings.json`: what the run was asked for and the recipe it trains, so that a resumed
  run trains the same recipe (a budget's plan included) or is refused;
- `.lock`: locked while a run trains in the folder (`fcntl.flock`, released by the system
  if the process dies), so that a second run in the same folder is refused at once; on
  Windows, which has no `flock`, folders are not guarded;
- `final.keras` and `history.json` when the run finishes;
- `tensorboard/` when asked for.

Resuming uses Keras's public API only: the weights are loaded into the compiled model and
`fit` is told where to start with `initial_epoch`. A history damaged on disk (a half-written
row, NUL bytes after a power loss) loses its damaged tail, with a warning, and never blocks a
rerun.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import keras
import numpy as np

from cifar_utils import storage
from cifar_utils.recipes import Recipe

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a folder is not guarded there
    fcntl = None

TEMPORARY_STEMS = ("best", "final", "history")  # atomic writes in the run folder


class EpochBackup(keras.callbacks.Callback):
    """Saves the weights and optimiser state after every epoch, so a killed run can resume.

    Each epoch's weights go to a new file (`epoch3.weights.h5`); only then does
    `state.json`, written atomically, point at it, and only then are older weights files
    deleted. A kill while writing the weights leaves an unreferenced partial file and the
    previous state intact. `RunFolder.resume` reads it back.

    Args:
        backup_dir: the backup folder.
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.folder = Path(backup_dir)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1  # epochs completed: where a resumed run starts
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = self.folder / f"epoch{done}.weights.h5"
        storage.check_free_space(self.folder, storage.model_bytes(self.model), "the backup")
        try:
            self.model.save_weights(str(weights), overwrite=True)
        except OSError as err:  # the disk filled up while writing: no partial file is kept
            weights.unlink(missing_ok=True)
            raise OSError(
                err.errno, f"cannot write the backup {weights}: {err.strerror or err}"
            ) from None
        storage.atomic_write_json(
            self.folder / "state.json", {"epoch": done, "weights": weights.name}
        )
        for old in self.folder.glob("epoch*.weights.h5"):
            if old != weights:
                old.unlink(missing_ok=True)


def read_backup_state(backup_dir):
    """The saved `{"epoch", "weights"}` of a backup folder, or None if there is none.

    Raises:
        ValueError: the state, or the weights file it names, is unreadable.
    """
    state_path = Path(backup_dir) / "state.json"
    if not state_path.exists():
        return None
    try:
        state = json.loads(state_path.read_text())
        epoch, weights = int(state["epoch"]), Path(backup_dir) / str(state["weights"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{state_path} is damaged ({type(err).__name__}: {err})") from None
    if weights.parent != Path(backup_dir) or not weights.is_file():
        raise ValueError(f"{state_path} names {weights.name}, which is missing")
    return {"epoch": epoch, "weights": weights}


def read_history(path) -> dict:
    """Reads a `history.csv` written during training into per-epoch lists.

    Keras's `CSVLogger` adds `val_` columns even to a run without validation, filled with
    "NA": columns with no value in any epoch are left out; an occasional "NA" reads as NaN.
    The rows from the first damaged one on (cut short, not numbers, NUL bytes, an epoch not
    after the one before, as when two runs wrote into one file) are dropped with a warning
    on stderr: they hold nothing a rerun can trust.
    """
    rows, damaged = _history_rows(path)
    if damaged:
        print(f"warning: {path}: dropped {damaged} damaged row(s) at its end", file=sys.stderr)
    history = {}
    for row in rows:
        for key, value in row.items():
            history.setdefault(key, []).append(value)
    return {
        key: values
        for key, values in history.items()
        if not all(isinstance(v, float) and np.isnan(v) for v in values)
    }


def _history_rows(path):
    """(the rows up to the first damaged one, as numbers; how many lines were dropped)."""
    with open(path, newline="", errors="replace") as f:
        lines = f.read().splitlines()
    header = next(csv.reader(lines[:1]), [])
    if not header or "epoch" not in header or any("\0" in name for name in header):
        return [], max(len(lines) - 1, 0) if header else len(lines)
    rows = []
    for values in csv.reader(lines[1:]):
        row = _parse_row(header, values)
        if row is None or (rows and row["epoch"] <= rows[-1]["epoch"]):
            break
        rows.append(row)
    return rows, len(lines) - 1 - len(rows)


def _parse_row(header, values):
    if len(values) != len(header):
        return None
    row = {}
    for key, value in zip(header, values):
        try:
            row[key] = float("nan") if value in ("NA", "") else float(value)
        except ValueError:
            return None
    if not float(row["epoch"]).is_integer():
        return None
    row["epoch"] = int(row["epoch"])
    return row


class RunInUse(RuntimeError):
    """Another training run holds the folder."""


class RunSettingsChanged(ValueError):
    """An unfinished run in the folder was started with other settings."""


class RunFolder:
    """The folder of one training run, and what `train` does with it before and after `fit`.

    Args:
        path: the folder; created by `prepare`.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.best_model = self.path / "best.keras"
        self.final_model = self.path / "final.keras"
        self.history_csv = self.path / "history.csv"
        self.history_json = self.path / "history.json"
        self.backup_dir = self.path / "backup"
        self.tensorboard_dir = self.path / "tensorboard"
        self.settings_json = self.backup_dir / "settings.json"
        self.lock_file = self.path / ".lock"
        self._lock = None
        self.kept_history = {}
        self.best_so_far = None
        self._state = None

    def __enter__(self):
        """Takes the folder's lock: a second run in the same folder is refused at once."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        handle = open(self.lock_file, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunInUse(
                f"{self.path} is in use by another training run ({holder}); wait for it to "
                "finish, or train into another folder (--output-dir / output_dir=)"
            ) from None
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.ctime()}\n")
            handle.flush()
        except OSError:
            handle.close()  # the lock goes with it
            raise
        self._lock = handle
        return self

    def __exit__(self, *exc_info):
        """Releases the lock (the system releases it too if the process dies).

        The file stays: deleting it would let a run that opened it just before and one that
        creates a new one both take "the" lock.
        """
        if self._lock is not None:
            handle, self._lock = self._lock, None
            try:
                handle.truncate(0)  # no holder named any more
            except OSError:
                pass
            finally:
                handle.close()  # closing releases the flock

    def prepare(self, resume=True):
        """Makes the folder ready for a run: a fresh start, or the resumption of a killed one.

        Creates the folder and removes the temporary files of a save that was killed. With a
        usable backup, rows of `history.csv` at or after the backup's epoch (written before a
        kill the backup did not see) are dropped, and the rest kept in `kept_history`, with
        their best validation accuracy in `best_so_far`. With no usable backup (none, one
        unreadable: reported on stderr, or `resume=False`), the backup and the history are
        removed and the run starts over.

        Args:
            resume: resume from a backup if there is one. Defaults to True.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        storage.remove_stale_temporaries(self.path, TEMPORARY_STEMS)
        storage.remove_stale_temporaries(self.backup_dir, ("settings", "state"))
        self.kept_history, self.best_so_far, self._state = {}, None, None
        try:
            self._state = read_backup_state(self.backup_dir) if resume else None
            if self._state is not None and self._saved_settings() is None:
                raise ValueError(f"{self.settings_json} is missing or damaged")
        except ValueError as err:
            print(f"cannot resume: {err}; starting this run from its first epoch", file=sys.stderr)
            self._state = None
        if self._state is None:
            self.discard_backup()
            self.history_csv.unlink(missing_ok=True)
            return
        if not self.history_csv.exists():
            return
        history = read_history(self.history_csv)  # its valid rows: a prefix of the file
        keep = [i for i, e in enumerate(history.get("epoch", [])) if e < self._state["epoch"]]
        if not keep:  # CSVLogger starts a new file, header included
            self.history_csv.unlink()
            return
        with open(self.history_csv, errors="replace") as f:
            lines = f.read().splitlines(keepends=True)[: 1 + len(keep)]
        storage.atomic_write_text(self.history_csv, "".join(lines).rstrip("\n") + "\n")
        self.kept_history = {key: [values[i] for i in keep] for key, values in history.items()}
        self.best_so_far = max(self.kept_history.get("val_accuracy", []), default=None)

    @property
    def resuming(self) -> bool:
        """`prepare` found a backup to resume from (with the settings it was started with)."""
        return self._state is not None

    def settle(self, asked: dict, recipe: Recipe) -> Recipe:
        """The recipe to train: the saved one when resuming, else `recipe`, saved for a resume.

        Args:
            asked: what the caller asked for, JSON-ready (`train` passes the recipe before
                any budget planning, and the budget).
            recipe: the recipe planned from it, for a fresh run.

        Returns:
            The `Recipe` to train.

        Raises:
            RunSettingsChanged: the folder holds an unfinished run asked for differently.
        """
        saved = self._saved_settings() if self.resuming else None
        if saved is None:  # a fresh run
            self.backup_dir.mkdir(parents=True, exist_ok=True)
            storage.atomic_write_json(
                self.settings_json, {"asked": asked, "recipe": recipe.to_dict()}
            )
            return recipe
        if json.loads(json.dumps(asked)) != saved["asked"]:
            changed = sorted(
                k for k in asked if json.loads(json.dumps(asked[k])) != saved["asked"].get(k)
            )
            raise RunSettingsChanged(
                f"{self.path} holds an unfinished run started with other {', '.join(changed)}; "
                "rerun it as it was started to resume it, or delete "
                f"{self.backup_dir} (or train into another folder) to start afresh"
            )
        return Recipe(**saved["recipe"])

    def _saved_settings(self):
        try:
            saved = json.loads(self.settings_json.read_text())
            Recipe(**saved["recipe"])
            return saved if isinstance(saved.get("asked"), dict) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def resume(self, model) -> int:
        """Loads the backup `prepare` found into a compiled model; returns the epoch to start at.

        Call it inside the distribution strategy's scope: it builds the optimiser, whose
        state the backup holds. Returns 0, changing nothing, when there is no backup.
        """
        if self._state is None:
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(str(self._state["weights"]))
        return self._state["epoch"]

    def backup_callback(self) -> EpochBackup:
        """The callback that keeps this folder's backup after every epoch."""
        return EpochBackup(self.backup_dir)

    def full_history(self, history, initial_epoch=0) -> dict:
        """The kept epochs followed by this session's (a `keras.callbacks.History`'s `history`)."""
        session = {
            "epoch": list(range(initial_epoch, initial_epoch + len(history.get("loss", []))))
        }
        session.update({key: [float(v) for v in values] for key, values in history.items()})
        names = {*self.kept_history, *session} - {"epoch"}
        keys = ["epoch", *sorted(names)]  # history.csv's order, resumed or not
        return {key: self.kept_history.get(key, []) + session.get(key, []) for key in keys}

    def finish(self, model, record: dict):
        """Writes `final.keras` and `history.json` (`record`), then discards the backup.

        The backup goes last: a kill before that resumes the run, it does not restart it.
        """
        storage.atomic_save_model(model, self.final_model)
        storage.atomic_write_json(self.history_json, record)
        self.discard_backup()

    def discard_backup(self):
        """Deletes the backup (after a finished run, or one whose weights became NaN)."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)

"""A CSV logger on the standard library: one row per step, one column per metric, written once."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from trainwright.loggers.base import Logger, flatten_params


class CSVLogger(Logger):
    """Writes metrics to ``<root_dir>/<filename>``, with a ``step`` column first.

    Metrics logged at the same step share a row; a metric seen for the first time adds a
    column. Rows are kept in memory and each is written once, after its step has ended: at
    most every ``flush_interval`` seconds, and whole at ``flush()`` (which ``Fabric.save``
    calls before every checkpoint) and ``finalize()``. A write appends the finished rows in
    one call; a new column rewrites the file through a temporary file and a rename.

    What a crash can cost: a process killed at any moment (even by SIGKILL) loses the rows
    logged since the last write, and nothing else. It never leaves a torn file: every write
    ends in a newline, and a last line without one is dropped, never read as a row, when the
    file is opened again with ``append=True``. Rows up to the last checkpoint are on disk,
    because ``flush`` writes them first, and a resumed run ``rewind``\\s to that checkpoint.

    ``log_hyperparams`` writes ``hparams.json`` next to the metrics file.

    Args:
        root_dir: the folder for the files, created on the first write.
        filename: the metrics file's name.
        append: keep the rows of an existing file and continue after its last step (for a
            resumed run; see also ``rewind``); otherwise an existing file is replaced.
        flush_interval: the most seconds that a finished row waits in memory; ``0`` writes
            each row as soon as the next step begins.

    Raises:
        ValueError: ``flush_interval`` is negative.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike,
        filename: str = "metrics.csv",
        append: bool = False,
        flush_interval: float = 5.0,
    ) -> None:
        if not flush_interval >= 0:
            raise ValueError(f"CSVLogger: flush_interval={flush_interval!r} must be a number of seconds >= 0")
        self.path = Path(root_dir) / filename
        self.append = append
        self.flush_interval = flush_interval
        self._file: IO[bytes] | None = None
        self._columns: list[str] = ["step"]
        self._last_step: int | None = None
        self._pending: list[dict[str, Any]] = []  # finished rows, not yet on disk
        self._open: dict[str, Any] | None = None  # the row of _last_step, which later values join
        self._open_at: int | None = None  # where the file holds a copy of _open (its last line), if it does
        self._open_changed = False  # whether _open changed since that copy was written
        self._stale_at: int | None = None  # where the file's last line, an old copy of _pending[0], starts
        self._written_at = 0.0

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._file is None:
            self._open_file()
        if step is None:
            step = 0 if self._last_step is None else self._last_step + 1
        if self._open is not None and step == self._last_step:
            self._open.update(metrics)
            self._open_changed = True
            return
        self._finish_open_row()
        self._open = {"step": step, **metrics}
        self._last_step = step
        if time.monotonic() - self._written_at >= self.flush_interval:
            self._write(with_open_row=False)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Write ``params`` (flattened to dotted names) to ``hparams.json`` next to the metrics
        file, replacing it atomically."""
        text = json.dumps(flatten_params(params), indent=2, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        target = self.path.with_name("hparams.json")
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)

    def flush(self) -> None:
        """Write every row logged so far, the current step's too, and hand it to the disk."""
        if self._file is not None:
            self._write(with_open_row=True)
            os.fsync(self._file.fileno())

    def finalize(self, status: str = "success") -> None:
        """Write every row and close the file; logging again appends to it."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._reset()
            self.append = True  # reopening must not wipe what was written

    def rewind(self, step: int) -> None:
        """Drop the rows after ``step``, and reopen the row at ``step`` so that new values join it.

        A run resumed from a checkpoint taken at ``step`` logs the later steps again; without
        this they would appear twice. Rows still in memory are dropped alike. The file is
        rewritten atomically.
        """
        if self._file is not None:
            self._write(with_open_row=True)
            self._file.close()
            self._reset()
        self.append = True
        if not self.path.is_file() or not self.path.stat().st_size:
            return
        columns, rows = self._read()
        self._columns = columns or ["step"]
        kept = [row for row in rows if row.get("step") and int(row["step"]) <= step]
        last = kept.pop() if kept and int(kept[-1]["step"]) == step else None
        self._open_at = self._replace(kept, last)
        self._open = last
        newest = last if last is not None else kept[-1] if kept else None
        self._last_step = int(newest["step"]) if newest is not None else None

    # -- writing -----------------------------------------------------------------------------

    def _reset(self) -> None:
        self._file = None
        self._pending, self._open, self._open_at, self._open_changed, self._stale_at = [], None, None, False, None

    def _finish_open_row(self) -> None:
        """Move the open row to the rows to write, unless the file already holds it as it is."""
        row = self._open
        if row is None:
            return
        if self._open_at is None:
            self._pending.append(row)
        elif self._open_changed:
            # Nothing was logged after the copy on disk, so _pending is empty and this row is
            # written first, over that copy.
            self._pending.append(row)
            self._stale_at = self._open_at
        self._open, self._open_at, self._open_changed = None, None, False

    def _write(self, with_open_row: bool) -> None:
        """Write the finished rows (and, ``with_open_row``, the open one) in one call."""
        self._written_at = time.monotonic()
        rows, stale_at, open_row = self._pending, self._stale_at, None
        if with_open_row and self._open is not None and (self._open_at is None or self._open_changed):
            open_row = self._open
            if self._open_at is not None:
                stale_at = self._open_at  # _pending is empty: the open row replaces its own copy
        if not rows and open_row is None:
            return
        batch = rows if open_row is None else [*rows, open_row]
        known, new_columns = set(self._columns), []
        for row in batch:
            for name in row:
                if name not in known:
                    known.add(name)
                    new_columns.append(name)
        body = self._encode(rows)
        tail = self._encode([open_row]) if open_row is not None else b""
        f = self._file
        end = f.seek(0, os.SEEK_END)
        if new_columns or (stale_at is not None and len(body) + len(tail) < end - stale_at):
            # A wider header, or a row that shrank (a plain overwrite would leave the end of
            # its old copy behind): rewrite the whole file through a rename.
            self._columns += new_columns
            f.close()
            _, on_disk = self._read()
            if stale_at is not None:
                on_disk.pop()
            open_at = self._replace([*on_disk, *rows], open_row)
        else:
            start = end if stale_at is None else stale_at
            f.seek(start)
            # One write, ending in a newline; over a stale copy it is at least as long.
            f.write(body + tail)
            f.flush()
            open_at = start + len(body) if open_row is not None else None
        self._pending, self._stale_at = [], None
        if open_row is not None:
            self._open_at, self._open_changed = open_at, False

    def _encode(self, rows: list[Mapping[str, Any]], header: bool = False) -> bytes:
        # Values are numbers (Fabric.log_dict guarantees it), so a row needs no quoting and is
        # joined directly. Column names may hold anything and go through the csv module.
        text = ""
        if header:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerow(self._columns)
            text = buffer.getvalue()
        columns = self._columns
        lines = [",".join(_cell(row.get(name)) for name in columns) for row in rows]
        return (text + "".join(line + "\n" for line in lines)).encode()

    def _open_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.append and self.path.is_file() and self.path.stat().st_size:
            columns, rows = self._read()
            self._columns = columns or ["step"]
            if rows and rows[-1].get("step"):
                self._last_step = int(rows[-1]["step"])
            self._file = open(self.path, "r+b")  # noqa: SIM115 (kept open across calls)
        else:
            self._file = open(self.path, "w+b")  # noqa: SIM115
            self._file.write(self._encode([], header=True))
            self._file.flush()
        self._written_at = time.monotonic()

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        """The header and rows on disk, after cutting off a last line that a kill left unfinished."""
        with open(self.path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            # Every write ends in a newline, so a line without one is torn.
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
        reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        rows = list(reader)
        return list(reader.fieldnames or []), rows

    def _replace(self, rows: list[Mapping[str, Any]], open_row: Mapping[str, Any] | None) -> int | None:
        """Write the header, ``rows`` and ``open_row`` through a temporary file and a rename, and
        reopen the file. Returns where ``open_row`` starts in it (``None`` without one)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(self._encode(rows, header=True))
            open_at = f.tell()
            if open_row is not None:
                f.write(self._encode([open_row]))
        os.replace(tmp, self.path)
        self._file = open(self.path, "r+b")  # noqa: SIM115 (kept open across calls)
        return open_at if open_row is not None else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)  # str(float) is its shortest exact repr
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text

"""A CSV logger on the standard library: one row per step, one column per metric."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from trainwright.loggers.base import Logger


class CSVLogger(Logger):
    """Writes metrics to ``<root_dir>/<filename>``, with a ``step`` column first.

    Metrics logged at the same step share a row; a metric seen for the first time adds a
    column (the file is then rewritten atomically with the wider header). Every value reaches
    the operating system as soon as it is logged, and the file is valid CSV after every call.

    Args:
        root_dir: the folder for the file, created on the first write.
        filename: the file's name.
        append: keep the rows of an existing file and continue after its last step (for a
            resumed run; see also ``rewind``); otherwise an existing file is replaced. A last
            line that a killed process left unfinished is dropped, never read as a row.
    """

    def __init__(self, root_dir: str | os.PathLike, filename: str = "metrics.csv", append: bool = False) -> None:
        self.path = Path(root_dir) / filename
        self.append = append
        self._file: IO[bytes] | None = None
        self._columns: list[str] = ["step"]
        self._last_step: int | None = None
        self._last_row: dict[str, Any] | None = None  # the row at ``_row_start``, still open for merging
        self._row_start = 0

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._file is None:
            self._open()
        if step is None:
            step = 0 if self._last_step is None else self._last_step + 1
        merge = self._last_row is not None and step == self._last_step
        row = {**self._last_row, **metrics} if merge else {"step": step, **metrics}
        new_columns = [name for name in metrics if name not in self._columns]
        if new_columns:
            self._columns += new_columns
            self._rewrite(row, drop_last=merge)
        else:
            self._write_row(row, replace_last=merge)
        self._last_step, self._last_row = step, row

    def finalize(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.append = True  # reopening must not wipe what was written

    def _encode(self, rows: list[Mapping[str, Any]], header: bool = False) -> bytes:
        # Values are numbers (Fabric.log_dict guarantees it), so a row needs no quoting and is
        # joined directly: the csv module costs several microseconds per row on this hot path.
        # Column names may hold anything and go through the csv module.
        text = ""
        if header:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerow(self._columns)
            text = buffer.getvalue()
        columns = self._columns
        lines = [",".join(_cell(row.get(name)) for name in columns) for row in rows]
        return (text + "".join(line + "\n" for line in lines)).encode()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.append and self.path.is_file() and self.path.stat().st_size:
            columns, rows = self._read()
            self._columns = columns or ["step"]
            if rows and rows[-1].get("step"):
                self._last_step = int(rows[-1]["step"])
            self._file = open(self.path, "r+b")  # noqa: SIM115 (kept open across calls)
            self._file.seek(0, os.SEEK_END)
        else:
            self._file = open(self.path, "w+b")  # noqa: SIM115
            self._file.write(self._encode([], header=True))
            self._file.flush()
        self._row_start = self._file.tell()

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        """The header and rows on disk, after cutting off a last line that a kill left unfinished."""
        with open(self.path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            # Every row is written whole and ends in a newline, so a line without one is torn.
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
        reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        rows = list(reader)
        return list(reader.fieldnames or []), rows

    def rewind(self, step: int) -> None:
        """Drop the rows after ``step``, and reopen the row at ``step`` so that new values join it.

        A run resumed from a checkpoint taken at ``step`` logs the later steps again; without
        this they would appear twice. The file is rewritten atomically.
        """
        if self._file is not None:
            self._file.close()
            self._file = None
        self.append = True
        if not self.path.is_file() or not self.path.stat().st_size:
            return
        columns, rows = self._read()
        self._columns = columns or ["step"]
        kept = [row for row in rows if row.get("step") and int(row["step"]) <= step]
        last = kept.pop() if kept and int(kept[-1]["step"]) == step else None
        self._replace(kept, last)
        self._last_row = last
        newest = last if last is not None else kept[-1] if kept else None
        self._last_step = int(newest["step"]) if newest is not None else None

    def _write_row(self, row: Mapping[str, Any], replace_last: bool) -> None:
        data = self._encode([row])
        f = self._file
        if replace_last:
            # Overwrite the open row in place. A merged row usually grows, and then one write
            # replaces it whole; only when it shrinks is it cut first, so that a crash can lose
            # this step's row but never leave the tail of the old one behind.
            if len(data) < f.seek(0, os.SEEK_END) - self._row_start:
                f.truncate(self._row_start)
            f.seek(self._row_start)
            f.write(data)
        else:
            f.seek(0, os.SEEK_END)
            self._row_start = f.tell()
            f.write(data)
        f.flush()

    def _rewrite(self, row: Mapping[str, Any], drop_last: bool) -> None:
        self._file.close()
        _, rows = self._read()
        if drop_last and rows:
            rows.pop()
        self._replace(rows, row)

    def _replace(self, rows: list[Mapping[str, Any]], open_row: Mapping[str, Any] | None) -> None:
        """Write the header, ``rows`` and ``open_row`` through a temporary file and a rename, then
        reopen the file with ``open_row`` (if any) as the row that later values of its step join."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(self._encode(rows, header=True))
            row_start = f.tell()
            if open_row is not None:
                f.write(self._encode([open_row]))
        os.replace(tmp, self.path)
        self._file = open(self.path, "r+b")  # noqa: SIM115 (kept open across calls)
        self._file.seek(0, os.SEEK_END)
        self._row_start = row_start if open_row is not None else self._file.tell()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)  # str(float) is its shortest exact repr
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text

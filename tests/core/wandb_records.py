"""Read what an offline W&B run wrote: its transaction log ``run-<id>.wandb``, decoded with W&B's own protobufs.

The log is in LevelDB's log format: a 7-byte W&B header, then 32 KiB blocks of records, each
with a 7-byte header (CRC-32C, little-endian length, type: 1 whole, 2 first, 3 middle, 4 last
part of a record); a block's tail shorter than a header is padding. This is the file that
``wandb sync`` uploads.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path) -> list[Any]:
    """Every record of the log at ``path``, as ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    out, pending, position = [], b"", HEADER
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if kind == 0:  # zero padding up to the block's end
            position += left
            continue
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return out


@dataclass
class OfflineRun:
    """The parts of an offline run the tests check."""

    run_id: str = ""
    project: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None


def read_run(run_dir: Path) -> OfflineRun:
    """Decode the transaction log in ``run_dir`` (``<save_dir>/wandb/offline-run-*``)."""
    (log,) = run_dir.glob("run-*.wandb")
    run = OfflineRun()
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project, run.name = record.run.run_id, record.run.project, record.run.display_name
            run.tags = list(record.run.tags)
            _update_config(run.config, record.run.config.update)
        elif kind == "config":
            _update_config(run.config, record.config.update)
        elif kind == "history":
            row = {_key(item): json.loads(item.value_json) for item in record.history.item}
            run.history.append({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(save_dir: Path) -> list[Path]:
    """The offline run folders under ``save_dir``, oldest first, once W&B has written them whole.

    ``run.finish()`` returns before W&B's service process has written the end of the log (CI
    once read a log with no records right after ``finish``); ``wandb.teardown()`` waits for that
    process to exit, so every log is complete. The next run starts a new service.
    """
    import wandb

    wandb.teardown()
    return sorted((save_dir / "wandb").glob("offline-run-*"))


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _update_config(config: dict[str, Any], updates: Any) -> None:
    for item in updates:
        if _key(item) != "_wandb":
            config[_key(item)] = json.loads(item.value_json)

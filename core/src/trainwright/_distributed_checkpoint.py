"""Sharded checkpoints: a directory that every process writes its own shards into, without gathering.

Layout of a checkpoint directory ``last.ckpt/``:

- ``.metadata`` and ``__<rank>_0.distcp``: a ``torch.distributed.checkpoint`` (DCP) checkpoint
  holding every ``DTensor`` of the checkpoint (the shards of sharded parameters and of their
  optimizer state), keyed by their place in the checkpoint;
- ``state.pt``: everything else, written by global rank zero exactly as a one-file checkpoint
  is (``CheckpointIO``), with ``None`` where a ``DTensor`` was. It is written last, so a
  directory that has it is complete.

DCP reshards on load, so a directory written by N processes loads on M.

Safety: DCP reads its ``.metadata`` with ``pickle`` and would read non-tensor entries with
``torch.load(weights_only=False)``. Here ``.metadata`` is read by an unpickler that admits only
DCP's metadata classes, a checkpoint whose metadata declares anything but tensors is refused,
and DCP itself reads tensors with ``weights_only=True``. So loading a directory runs no code
from it, as loading a file does not.

Atomicity: the processes write into ``.<name>.saving-<token>/``; rank zero then moves the old
checkpoint aside (``.<name>.replaced-<token>``), renames the new one into place and deletes the
old one. A crash between the two renames leaves no ``<name>``; ``locate`` then finds the newest
complete checkpoint beside it, and the next save finishes the move. A one-file checkpoint that
replaces a directory (or the other way, after a change of strategy) takes the same two renames
(``save_file``); a file that replaces a file is one ``os.replace``.

``torch.distributed.checkpoint`` is imported only when a directory is written or read.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainwright.checkpoint import CheckpointIO, _fsync_folder

STATE_FILE = "state.pt"
_METADATA_FILE = ".metadata"

#: The classes DCP's ``.metadata`` pickle is made of; nothing else is unpickled.
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "TensorStorageMetadata",
        "TensorProperties",
        "ChunkStorageMetadata",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "Path"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if (module, name) in _METADATA_CLASSES or dtype:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's tensor metadata")


# -- the checkpoint's tensors and the rest --------------------------------------------------------


def _is_dtensor(value: Any) -> bool:
    from torch.distributed.tensor import DTensor  # only called once a DTensor may exist

    return isinstance(value, DTensor)


def split_dtensors(checkpoint: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Return ``checkpoint`` with each ``DTensor`` replaced by ``None``, and the ``DTensor`` s by key.

    A key is the JSON list of the dict keys and list indices leading to the tensor.
    """
    found: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: list) -> Any:
        if isinstance(value, torch.Tensor):
            if _is_dtensor(value):
                found[json.dumps(path)] = value
                return None
            return value
        if isinstance(value, dict):
            return type(value)((k, walk(v, [*path, _key(k)])) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            items = [walk(v, [*path, i]) for i, v in enumerate(value)]
            return items if isinstance(value, list) else tuple(items)
        return value

    return walk(checkpoint, []), found


def _key(key: Any) -> Any:
    # JSON keeps strings and ints apart, so ``{0: ...}`` and ``{"0": ...}`` get different keys.
    return key if isinstance(key, (str, int)) and not isinstance(key, bool) else repr(key)


def insert_tensors(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Put ``tensors`` back at their places in ``skeleton`` (the inverse of ``split_dtensors``)."""
    for key, tensor in tensors.items():
        path = json.loads(key)
        container = skeleton
        for step in path[:-1]:
            container = container[_find(container, step)]
        container[_find(container, path[-1])] = tensor
    return skeleton


def _find(container: Any, step: Any) -> Any:
    if isinstance(container, dict) and step not in container:
        return next(k for k in container if _key(k) == step)
    return step


# -- where the checkpoint is ----------------------------------------------------------------------


def _complete(directory: Path) -> bool:
    return (directory / STATE_FILE).is_file() and (directory / _METADATA_FILE).is_file()


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that holds a complete sharded checkpoint."""
    return Path(path).is_dir() and _complete(Path(path))


def _siblings(path: Path, kind: str) -> list[Path]:
    """``.<name>.<kind>-<token>`` entries beside ``path``, newest first."""
    found = list(path.parent.glob(f".{path.name}.{kind}-*")) if path.parent.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def locate(path: str | os.PathLike) -> Path:
    """The checkpoint to read for ``path``: ``path`` itself, or after a crash mid-swap the newest complete one.

    Raises:
        FileNotFoundError: nothing loadable is at ``path`` or beside it.
        ValueError: ``path`` is a directory but not a complete sharded checkpoint.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        if not _complete(path):
            raise ValueError(
                f"{str(path)!r} is a directory but not a sharded checkpoint: it lacks {STATE_FILE} or {_METADATA_FILE}"
            )
        return path
    for candidate in [*_siblings(path, "saving"), *_siblings(path, "replaced")]:
        if candidate.is_file() or (candidate.is_dir() and _complete(candidate)):
            return candidate
    raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def tidy(path: Path) -> None:
    """Before a save: finish a move a crash interrupted, then delete what earlier saves left beside ``path``."""
    if not path.exists():
        try:
            found = locate(path)
        except FileNotFoundError:
            found = None
        if found is not None:
            os.replace(found, path)
    for leftover in [*_siblings(path, "saving"), *_siblings(path, "replaced")]:
        _remove(leftover)


def put_in_place(new: Path, path: Path, token: str) -> None:
    """Rename ``new`` to ``path``, replacing what is there (a file or a directory) without ever mixing the two."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.replaced-{token}")
        os.replace(path, old)
    os.replace(new, path)
    _fsync_folder(path.parent)
    if old is not None:
        _remove(old)


# -- writing and reading --------------------------------------------------------------------------


def save_file(path: str | os.PathLike, checkpoint: dict[str, Any], checkpoint_io: CheckpointIO) -> None:
    """Write a one-file checkpoint at ``path`` (from one process), replacing a file or a sharded directory.

    A directory cannot be replaced by a file in one rename: the file is written in full beside
    it first, and ``put_in_place`` swaps the two, so that a reader finds the old checkpoint or
    the new one (``locate``), never a part of either.
    """
    target = Path(path)
    tidy(target)
    if target.is_dir():
        token = uuid.uuid4().hex[:12]
        staging = target.with_name(f".{target.name}.saving-{token}")
        checkpoint_io.save(checkpoint, staging)
        put_in_place(staging, target, token)
    else:
        checkpoint_io.save(checkpoint, target)


def save_sharded(
    path: str | os.PathLike,
    checkpoint: dict[str, Any],
    *,
    is_coordinator: bool,
    broadcast: Callable[[Any], Any],
    barrier: Callable[[], None],
    checkpoint_io: CheckpointIO,
) -> None:
    """Write ``checkpoint`` (plain data with ``DTensor`` s) as a directory at ``path``; every process calls this."""
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    token = None
    if is_coordinator:
        path.parent.mkdir(parents=True, exist_ok=True)
        tidy(path)
        token = uuid.uuid4().hex[:12]
    token = broadcast(token)
    staging = path.with_name(f".{path.name}.saving-{token}")
    skeleton, tensors = split_dtensors(checkpoint)
    dcp.save(tensors, storage_writer=dcp.FileSystemWriter(staging, sync_files=True))
    if is_coordinator:  # DCP's save returns on the coordinator once every shard and the metadata are written
        checkpoint_io.save(skeleton, staging / STATE_FILE)
        put_in_place(staging, path, token)
    barrier()


def load_sharded(
    directory: Path, checkpoint_io: CheckpointIO, targets: Callable[[dict[str, Any]], dict[str, torch.Tensor]]
) -> dict[str, Any]:
    """Read a checkpoint directory; its ``DTensor`` s are read into ``targets(skeleton)``, resharded.

    A wanted tensor that the checkpoint lacks is left out, as is a stored one that is not
    wanted (it stays ``None``): restoring the objects then reports them as missing or
    unexpected keys, or skips them under ``strict=False``.

    Args:
        directory: a complete checkpoint directory (see ``locate``).
        checkpoint_io: reads ``state.pt``.
        targets: given the checkpoint without its ``DTensor`` s, returns a tensor to read into
            for each key wanted, shaped and sharded as this job needs it.

    Raises:
        ValueError: the metadata holds anything but tensor metadata, or cannot be read.
    """
    import torch.distributed.checkpoint as dcp

    skeleton = checkpoint_io.load(directory / STATE_FILE)
    reader = _safe_reader(directory)
    stored = reader.read_metadata().state_dict_metadata
    wanted = {key: tensor for key, tensor in targets(skeleton).items() if key in stored}
    if wanted:
        dcp.load(wanted, storage_reader=reader)
    return insert_tensors(skeleton, wanted)


def _safe_reader(directory: Path) -> Any:
    """DCP's file reader for ``directory``, made safe (built here so that DCP is imported only now)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta, TensorStorageMetadata

    class SafeReader(FileSystemReader):
        """DCP's file reader, with its metadata read by a restricted unpickler and checked to hold only tensors."""

        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            location = Path(self.path) / _METADATA_FILE
            try:
                with open(location, "rb") as f:
                    metadata = _MetadataUnpickler(f).load()
            except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as error:
                raise ValueError(f"refusing to load {str(location)!r}: {error}") from None
            entries = getattr(metadata, "state_dict_metadata", None)
            if not isinstance(entries, dict) or not all(isinstance(v, TensorStorageMetadata) for v in entries.values()):
                raise ValueError(f"refusing to load {str(location)!r}: it declares entries that are not tensors")
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(directory)

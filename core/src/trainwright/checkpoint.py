"""Checkpoint files: plain data only, written atomically, read without unpickling code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, plus one reserved entry
that records the format version. Objects with ``state_dict``/``load_state_dict`` (modules,
optimizers, schedulers, callbacks) are converted on save and restored in place on load, so a
checkpoint never names a project class and survives a refactor of the code that wrote it.
"""

from __future__ import annotations

import glob
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
#: The reserved top-level entry that holds the format version and Fabric's own state.
RESERVED_KEY = "__trainwright__"

_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype, torch.device, torch.Size)


class CheckpointIO:
    """Reads and writes checkpoint files.

    ``save`` writes to a temporary file in the target's folder, flushes it to disk and then
    renames it over the target, so a crash at any moment leaves either the old file or the new
    one, never a torn one. ``load`` uses ``weights_only=True``, which refuses anything but
    tensors and plain data, so loading a checkpoint cannot run code. It maps the file into
    memory rather than reading it: under DDP and FSDP every process loads the same file, and
    mapped, the processes of a node share one copy of it in the page cache, of which each reads
    only the pages it uses, instead of holding one private copy each.
    """

    def save(self, checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
        """Write ``checkpoint`` to ``path`` atomically, creating the parent folders."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)

    def load(self, path: str | os.PathLike) -> dict[str, Any]:
        """Read a checkpoint onto the CPU.

        Raises:
            FileNotFoundError: nothing is at ``path``.
            ValueError: the file is not a readable checkpoint, or holds pickled objects other
                than plain data (which are refused, not run).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip_archive(path))
        except pickle.UnpicklingError as error:
            # torch's message suggests weights_only=False, which is exactly what must not be done
            # with an untrusted file; keep only what names the refused part, without the advice.
            detail = next((line.strip() for line in str(error).splitlines() if "Unsupported" in line), "")
            detail = detail.removeprefix("WeightsUnpickler error: ").split(". ")[0]
            if "Unsupported global" in detail or "Unsupported class" in detail:
                reason = "it holds pickled objects other than tensors and plain data, and loading those could run code"
            else:  # an opcode the safe unpickler does not take: garbage, or a pickle of another protocol
                reason = "it is not a checkpoint of tensors and plain data that loads without running code"
            raise ValueError(f"refusing to load {str(path)!r}: {reason}" + (f" ({detail})" if detail else "")) from None
        except (RuntimeError, EOFError, OSError) as error:
            raise ValueError(f"{str(path)!r} is not a readable checkpoint: {error}") from None
        except (KeyError, IndexError, ValueError, TypeError):
            # What the unpickler raises on bytes that are no pickle at all (a text file, say): its
            # message is an opcode number, which says nothing to the reader.
            raise ValueError(
                f"{str(path)!r} is not a checkpoint: it is neither a zip archive nor a pickle that torch.load reads"
            ) from None
        if not isinstance(checkpoint, dict):
            raise ValueError(f"{str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint dict")
        return checkpoint


def _is_zip_archive(path: Path) -> bool:
    # torch.save's format since torch 1.6, the only one torch.load can map; an older file (or
    # garbage) is read whole, and refused as before if it is not a checkpoint.
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files that a killed writer of ``path`` left behind."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = stale.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not _process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk; not every OS allows this.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_plain(obj: Any, where: str = "state", state_dict: Callable[[Any], Any] | None = None) -> Any:
    """Convert ``obj`` to plain data: objects with ``state_dict`` are replaced by it.

    Args:
        obj: the state to convert.
        where: how error messages name ``obj``.
        state_dict: what an object with ``state_dict`` becomes; ``obj.state_dict()`` by default.
            A strategy passes its own, e.g. to gather a sharded model.

    Raises:
        TypeError: something in ``obj`` is neither plain data nor has a ``state_dict``; the
            message gives its place, e.g. ``state['callbacks'][2]``.
    """
    method = getattr(obj, "state_dict", None)
    if callable(method) and not isinstance(obj, type):
        value = method() if state_dict is None else state_dict(obj)
        return to_plain(value, f"{where}.state_dict()", state_dict)
    if isinstance(obj, _LEAF_TYPES):
        return obj
    if isinstance(obj, Mapping):
        container = OrderedDict if isinstance(obj, OrderedDict) else dict
        return container((k, to_plain(v, f"{where}[{k!r}]", state_dict)) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [to_plain(v, f"{where}[{i}]", state_dict) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else set(items) if isinstance(obj, (set, frozenset)) else tuple(items)
    raise TypeError(
        f"{where} is a {type(obj).__qualname__}, which a checkpoint cannot hold: checkpoints are plain data "
        "(tensors, numbers, strings, lists, dicts) so that they load with weights_only=True. "
        "Give the object state_dict() and load_state_dict() methods, or convert it to plain data."
    )


def load_into(target: Any, value: Any, strict: bool = True) -> None:
    """Call ``target.load_state_dict(value)``, passing ``strict`` to modules."""
    if isinstance(target, torch.nn.Module):
        target.load_state_dict(value, strict=strict)
    else:
        target.load_state_dict(value)


def restore(
    state: dict[str, Any],
    checkpoint: Mapping[str, Any],
    strict: bool = True,
    where: str = "checkpoint",
    load: Callable[[Any, Any, bool], None] = load_into,
) -> None:
    """Load ``checkpoint`` into ``state`` in place.

    Objects with ``load_state_dict`` load their entry (through ``load``, which a strategy may
    replace); nested dicts are restored key by key; any other value in ``state`` is replaced by
    the checkpoint's.

    Raises:
        KeyError: ``strict`` and an entry of ``state`` is missing from the checkpoint.
    """
    for key, target in state.items():
        if key not in checkpoint:
            if strict:
                known = sorted(map(str, checkpoint))
                raise KeyError(f"{where} has no entry {key!r} (it has {known}); pass strict=False to skip it")
            continue
        value = checkpoint[key]
        if callable(getattr(target, "load_state_dict", None)) and not isinstance(target, type):
            load(target, value, strict)
        elif isinstance(target, dict) and isinstance(value, Mapping):
            restore(target, value, strict, f"{where}[{key!r}]", load)
        else:
            state[key] = value


def check_format(checkpoint: Mapping[str, Any], path: str | os.PathLike, reader_version: str) -> dict[str, Any]:
    """Return the checkpoint's own entry (format version, precision state) after checking it.

    Args:
        checkpoint: what the file held.
        path: where it came from, for the messages.
        reader_version: the trainwright version reading it, for the messages.

    Raises:
        ValueError: the checkpoint was not written by ``Fabric.save``, or has a format version
            this release cannot read.
    """
    meta = checkpoint.get(RESERVED_KEY)
    if not isinstance(meta, dict):
        raise ValueError(
            f"load(): {str(path)!r} was not written by Fabric.save (it has no {RESERVED_KEY!r} entry); "
            "read it with torch.load(path, weights_only=True)"
        )
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"load(): {str(path)!r} has checkpoint format version {version!r}, but trainwright {reader_version} "
            f"reads format version {FORMAT_VERSION}"
        )
    return meta

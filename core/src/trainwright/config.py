"""Typed configuration for your own dataclass, from a TOML file and ``--field=value`` flags.

Fields may be ``int``, ``float``, ``bool``, ``str``, ``pathlib.Path``, an ``Enum``, a
``Literal``, an optional (``X | None``) or union of these, a ``list``/``tuple`` of them, a
``dict`` (from TOML only), or a nested dataclass, addressed as ``--section.field=value`` or as
a ``[section]`` table. Flags may spell a name with dashes or underscores. Every error is a
``ConfigError`` that names the field, the value and what was expected. ``dump_toml`` writes a
config back as TOML that ``load_config`` reads back equal, for a run directory's ``config.toml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null")


class ConfigError(ValueError):
    """A configuration value, key, flag or file is wrong; the message says which and why."""


class _BadValue(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


def _hints(cls: type) -> dict[str, Any]:
    # Resolves string annotations (``from __future__ import annotations``) to types.
    return typing.get_type_hints(cls)


def _describe(tp: Any, flag: bool = False) -> str:
    """How a value of ``tp`` is written, for messages: "an integer", "one of 'a', 'b'", ..."""
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a, flag) for a in get_args(tp))
    if origin in (list, tuple, set, frozenset):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        kind = "a comma-separated list" if flag else "a list"
        if origin is tuple and len(args) > 1 and get_args(tp)[-1] is not Ellipsis:
            return f"{kind} of {len(args)}: " + ", ".join(_describe(a) for a in args)
        return f"{kind}, each {_describe(args[0])}" if args else kind
    if origin is dict:
        return "a table"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.name) for m in tp)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "none"}
    if tp in names:
        return names[tp]
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path"
    return getattr(tp, "__name__", str(tp))


def _from_string(text: str, tp: Any) -> Any:
    """Convert a flag's text to ``tp``; raises ``_BadValue`` naming what was expected."""
    origin = get_origin(tp)
    if tp is Any:
        return text
    if origin in (Union, types.UnionType):
        members = get_args(tp)
        if type(None) in members and text.strip().lower() in _NONE:
            return None
        for member in members:
            if member is not type(None):
                try:
                    return _from_string(text, member)
                except _BadValue:
                    continue
        raise _BadValue(_describe(tp, flag=True))
    if origin is Literal:
        for choice in get_args(tp):
            if str(choice) == text:
                return choice
        raise _BadValue(_describe(tp))
    if origin in (list, tuple, set, frozenset):
        items = [part.strip() for part in text.split(",")] if text.strip() else []
        args = get_args(tp)
        try:
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(items) != len(args):
                    raise _BadValue("")
                return tuple(_from_string(item, arg) for item, arg in zip(items, args, strict=True))
            return origin(_from_string(item, args[0] if args else Any) for item in items)
        except _BadValue:
            raise _BadValue(_describe(tp, flag=True)) from None
    if tp is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _BadValue(_describe(bool))
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise _BadValue(_describe(tp)) from None
    if tp is str:
        return text
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return tp(text)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_member(text, tp)
    raise _BadValue(f"{_describe(tp)}, which cannot be set from a flag; set it in the config file")


def _enum_member(value: object, tp: type[enum.Enum]) -> enum.Enum:
    for member in tp:
        if value == member.name or value == member.value:
            return member
    raise _BadValue(_describe(tp))


def _from_toml(value: Any, tp: Any, where: str) -> Any:
    """Check a TOML value against ``tp``; raises ``_BadValue`` naming what was expected."""
    tp = {dict: dict[str, Any], list: list[Any]}.get(tp, tp)  # a bare ``dict`` or ``list`` holds anything
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _BadValue(f"a table of {tp.__name__} fields")
        return _mapping_changes(tp, value, where)
    if origin in (Union, types.UnionType):
        # TOML has no null: an optional field takes "none" as flags do (``--limit=none``).
        if type(None) in get_args(tp) and isinstance(value, str) and value.strip().lower() in _NONE:
            return None
        for member in get_args(tp):
            if member is not type(None):
                try:
                    return _from_toml(value, member, where)
                except _BadValue:
                    continue
        raise _BadValue(_describe(tp))
    if origin is Literal:
        # ``type`` too, or ``true`` would match ``Literal[1]``.
        if any(value == choice and type(value) is type(choice) for choice in get_args(tp)):
            return value
        raise _BadValue(_describe(tp))
    if origin in (list, tuple, set, frozenset):
        args = get_args(tp)
        try:
            if not isinstance(value, list):
                raise _BadValue("")
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise _BadValue("")
                return tuple(_from_toml(v, a, where) for v, a in zip(value, args, strict=True))
            return origin(_from_toml(v, args[0] if args else Any, where) for v in value)
        except _BadValue:
            raise _BadValue(_describe(tp)) from None
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _BadValue("a table")
        _, value_type = get_args(tp) or (Any, Any)
        return {k: _from_toml(v, value_type, where) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _BadValue(_describe(bool))
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _BadValue(_describe(int))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _BadValue(_describe(float))
    if tp is str:
        if isinstance(value, str):
            return value
        raise _BadValue(_describe(str))
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, str):
            return tp(value)
        raise _BadValue(_describe(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_member(value, tp)
    raise _BadValue(_describe(tp))


class _Section(dict):
    """Changes to a nested dataclass field, as opposed to the value of a ``dict`` field."""


def _unknown(name: str, known: Iterable[str], where: str, style: str) -> ConfigError:
    shown = {f"--{k.replace('_', '-')}" if style == "flag" else k: k for k in known}
    asked = f"--{name.replace('_', '-')}" if style == "flag" else name
    close = difflib.get_close_matches(asked, list(shown), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(shown)}"
    return ConfigError(f"{where}: unknown {'option' if style == 'flag' else 'key'} {asked}{hint}")


def _mapping_changes(cls: type, mapping: Mapping[str, Any], where: str) -> _Section:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    changes = _Section()
    for key, value in mapping.items():
        if key not in names:
            raise _unknown(key, names, where, "key")
        try:
            changes[key] = _from_toml(value, hints[key], f"{where} [{key}]")
        except _BadValue as bad:
            raise ConfigError(f"{where}: {key} = {value!r} is not {bad.expected}") from None
    return changes


def _flag_changes(cls: type, args: Iterable[str], source: str) -> _Section:
    changes = _Section()
    for arg in args:
        if not isinstance(arg, str) or not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"{source}: {arg!r} is not of the form --field=value")
        name, has_value, text = arg[2:].partition("=")
        path = name.replace("-", "_").split(".")
        owner, target = cls, changes
        for depth, part in enumerate(path):
            if not dataclasses.is_dataclass(owner):
                raise ConfigError(f"{source}: --{'.'.join(path[:depth])} has no fields; cannot set {arg!r}")
            names = [f.name for f in dataclasses.fields(owner)]
            if part not in names:
                prefix = ".".join(path[:depth])
                known = [f"{prefix}.{n}" if prefix else n for n in names]
                raise _unknown(f"{prefix}.{part}" if prefix else part, known, source, "flag")
            tp = _hints(owner)[part]
            if depth + 1 < len(path):
                owner, target = tp, target.setdefault(part, _Section())
                continue
            if dataclasses.is_dataclass(tp):
                raise ConfigError(f"{source}: --{name} is a section; set its fields, e.g. --{name}.<field>=value")
            if not has_value:
                if tp is not bool:
                    raise ConfigError(f"{source}: {arg!r} needs a value, as in --{name}=<{_describe(tp, flag=True)}>")
                text = "true"
            try:
                target[part] = _from_string(text, tp)
            except _BadValue as bad:
                raise ConfigError(f"{source}: --{name}={text!r} is not {bad.expected}") from None
    return changes


def _merge(base: _Section, extra: _Section) -> _Section:
    merged = _Section(base)
    for key, value in extra.items():
        both = isinstance(value, _Section) and isinstance(merged.get(key), _Section)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def _field_default(cls: type, name: str) -> Any:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _build(cls: type, base: Any, changes: _Section, where: str) -> Any:
    """Return ``base`` (or, if ``None``, a new ``cls``) with ``changes`` applied, nested sections too."""
    hints = _hints(cls)
    resolved = {}
    for key, value in changes.items():
        if isinstance(value, _Section):
            nested_base = getattr(base, key) if base is not None else _field_default(cls, key)
            value = _build(hints[key], nested_base if dataclasses.is_dataclass(nested_base) else None, value, where)
        resolved[key] = value
    if base is None:
        for field in dataclasses.fields(cls):
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if required and field.init and field.name not in resolved:
                raise ConfigError(
                    f"{where}: {cls.__name__}.{field.name} has no default; set it in the config file "
                    f"or with --{field.name.replace('_', '-')}=..."
                )
    try:
        return dataclasses.replace(base, **resolved) if base is not None else cls(**resolved)
    except ValueError as error:  # raised by the dataclass's own __post_init__ checks
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where}: {error}") from None


def apply_mapping(config: T, mapping: Mapping[str, Any], *, source: str = "config") -> T:
    """Return a copy of the dataclass ``config`` with the values of ``mapping`` (e.g. parsed TOML).

    Values are checked, not coerced: ``3`` is fine for a ``float`` field, ``"3"`` for an
    ``int`` field is not. Nested mappings set nested dataclass fields.

    Raises:
        ConfigError: an unknown key (with the closest known one), or a value of the wrong type.
    """
    return _build(type(config), config, _mapping_changes(type(config), mapping, source), source)


def apply_overrides(config: T, args: Iterable[str], *, source: str = "command line") -> T:
    """Return a copy of the dataclass ``config`` with ``--field=value`` flags applied.

    ``--max-epochs=3`` and ``--max_epochs=3`` both set ``max_epochs``; ``--optim.lr=0.1`` sets
    a nested field; a bare ``--flag`` sets a ``bool`` field to true. Later flags win.

    Raises:
        ConfigError: a malformed flag, an unknown field (with the closest known one), or a
            value that does not convert to the field's type.
    """
    return _build(type(config), config, _flag_changes(type(config), args, source), source)


def load_config(cls: type[T], path: str | os.PathLike | None = None, args: Iterable[str] = ()) -> T:
    """Build ``cls`` from its defaults, then the TOML file at ``path``, then the flags ``args``.

    Fields without a default must be set by the file or the flags.

    Raises:
        ConfigError: the file is missing or not valid TOML, or any key, flag or value is wrong.
    """
    changes = _Section()
    source = "command line"
    if path is not None:
        path = Path(path)
        source = f"{path} and command line"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {error}") from None
        import tomllib  # only needed here; keeps ``import trainwright`` lean

        try:
            mapping = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None
        changes = _mapping_changes(cls, mapping, str(path))
    changes = _merge(changes, _flag_changes(cls, args, "command line"))
    return _build(cls, None, changes, source)


def format_help(config: Any, prefix: str = "") -> str:
    """One line per field, ``--name=TYPE  (default: value)  help``, for a CLI's ``--help``.

    A field's help text comes from ``dataclasses.field(metadata={"help": ...})``.
    """
    lines = []
    hints = _hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        name = f"{prefix}{field.name.replace('_', '-')}"
        if dataclasses.is_dataclass(value):
            lines.append(format_help(value, prefix=f"{name}."))
            continue
        shown = str(value) if isinstance(value, PurePath) else value
        help_text = field.metadata.get("help", "")
        lines.append(
            f"  --{name}=<{_describe(hints[field.name], flag=True)}>  (default: {shown!r})  {help_text}".rstrip()
        )
    return "\n".join(lines)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_INT64 = 2**63


def dump_toml(config: Any) -> str:
    """The dataclass instance ``config`` as TOML that ``load_config(type(config), path)`` reads back
    equal to it: a run directory's ``config.toml``, from which the run can be repeated.

    Every field is written, in order; nested dataclasses become ``[section]`` tables and dicts
    inline tables; paths are strings and enums their member names. TOML has no null: a field that
    is ``None`` is left out (a comment says so) when its default is ``None`` too, and is written
    as ``"none"``, which an optional field reads as ``None`` (as the flag ``--field=none`` does),
    when its default is something else.

    Raises:
        TypeError: ``config`` is not a dataclass instance.
        ValueError: a value has no TOML form that reads back equal: ``None`` in a field that is
            not optional or inside a list or dict, a dict key that is not a string,
            an integer outside 64 bits, a lone surrogate in a string, or a type that
            ``load_config`` does not read. The message names the field.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"dump_toml(): config must be a dataclass instance, got {type(config).__qualname__}")
    lines: list[str] = []
    _dump_table(config, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _dump_table(config: Any, path: list[str], lines: list[str]) -> None:
    sections = []
    for field in dataclasses.fields(config):
        if not field.init:
            continue  # load_config cannot set it either
        value = getattr(config, field.name)
        where = ".".join([*path, field.name])
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            sections.append((field.name, value))
        elif value is None:
            default = _declared_default(field)
            if default is None:
                lines.append(f"# {_toml_key(field.name)}: none (TOML has no null; reading this file gives the default)")
            elif type(None) in get_args(_hints(type(config))[field.name]):
                lines.append(f'{_toml_key(field.name)} = "none"')  # read back as None, as --field=none is
            else:
                shown = "no default" if default is dataclasses.MISSING else f"its default is {default!r}"
                raise ValueError(
                    f"dump_toml(): {where} is None, which TOML cannot hold, and {shown}; "
                    "reading the file back would not give None"
                )
        else:
            lines.append(f"{_toml_key(field.name)} = {_toml_value(value, where)}")
    for name, value in sections:
        lines += ["", "[" + ".".join(_toml_key(part) for part in [*path, name]) + "]"]
        _dump_table(value, [*path, name], lines)


def _declared_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):  # before int: an IntEnum is an int
        return _toml_string(value.name, where)
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ValueError(f"dump_toml(): {where} = {value} does not fit in TOML's 64-bit integers")
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # TOML spells inf, -inf and nan alike
    if isinstance(value, str):
        return _toml_string(value, where)
    if isinstance(value, PurePath):
        return _toml_string(str(value), where)
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(_toml_value(item, where) for item in _nonnull(value, where)) + "]"
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"dump_toml(): {where} has the key {key!r}; TOML keys are strings")
            items.append(f"{_toml_key(key)} = {_toml_value(item, where)}")
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise ValueError(f"dump_toml(): {where} is a {type(value).__qualname__}, which load_config does not read")


def _nonnull(values: Iterable[Any], where: str) -> Iterable[Any]:
    for value in values:
        if value is None:
            raise ValueError(f"dump_toml(): {where} holds None, which TOML cannot hold")
        yield value


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key, key)


def _toml_string(text: str, where: str) -> str:
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        elif "\ud800" <= char <= "\udfff":
            raise ValueError(f"dump_toml(): {where} holds a lone surrogate ({char!r}), which TOML cannot hold")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'

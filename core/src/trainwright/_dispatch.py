"""Ordered, signature-filtered dispatch of a hook to callbacks: the engine behind ``Fabric.call``.

Why code is generated: each hook gets a *plan*, a small function compiled for one list of
callbacks and one set of keyword names, which calls every callback's hook with exactly the
arguments its signature accepts. A cached call then costs about what writing the calls out by
hand costs (the same trick ``dataclasses`` and ``attrs`` use for ``__init__``). Signatures are
analysed once per function. On every call the plan first checks that the callbacks, the keyword
names and the hooks themselves (present or absent) are still the ones it was compiled for, and
reports itself stale otherwise, so appending a callback, rebinding a hook on an instance or
adding one to a class takes effect at once. A hook that no callback has gets a plan that only
asks each callback whether it has the hook now, whatever the arguments: a hook that a loop fires
but nobody implements costs a few attribute checks, never a recompilation.
"""

from __future__ import annotations

import difflib
import inspect
import keyword
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

_STALE = object()  # returned by a plan whose assumptions no longer hold
_MISSING = object()
_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_POSITIONAL_OR_KEYWORD = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD
_MAX_CACHED_PLANS = 256
# Functions whose signatures are kept. A hook that is a new function at every lookup (a
# property returning a closure) would otherwise add one entry, and keep one function alive,
# per call.
_MAX_CACHED_SIGNATURES = 256

Plan = Callable[[list, tuple, dict], Any]


class UnusedHook(NamedTuple):
    """An ``on_*`` method of a registered callback that no ``Fabric.call`` has dispatched."""

    callback: str
    hook: str
    suggestion: str | None

    def __str__(self) -> str:
        text = f"{self.callback}.{self.hook} was never called"
        return f"{text}; did you mean {self.suggestion!r}?" if self.suggestion else text


class HookSignatureError(TypeError):
    """A callback's hook requires a parameter that the call does not supply.

    The message names the callback, the hook, the parameter and the keyword arguments passed.
    """


class _Params(NamedTuple):
    """What a hook's signature accepts, reduced to what dispatch needs."""

    positional: tuple[inspect.Parameter, ...]  # positional-only and positional-or-keyword
    var_positional: bool
    keyword_only: tuple[inspect.Parameter, ...]
    var_keyword: bool


class _Missing(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _analyse(fn: Callable) -> _Params | None:
    """Reduce ``fn``'s signature to a ``_Params``, or ``None`` when it cannot be inspected."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = signature.parameters.values()
    return _Params(
        positional=tuple(p for p in params if p.kind in (_POSITIONAL_ONLY, _POSITIONAL_OR_KEYWORD)),
        var_positional=any(p.kind is _VAR_POSITIONAL for p in params),
        keyword_only=tuple(p for p in params if p.kind is _KEYWORD_ONLY),
        var_keyword=any(p.kind is _VAR_KEYWORD for p in params),
    )


def _select(params: _Params | None, nargs: int, names: Sequence[str]) -> tuple[str, ...] | None:
    """Return the keyword names to pass, or ``None`` to pass every keyword argument.

    Raises:
        _Missing: a required parameter is supplied neither positionally nor by keyword, or too
            many positional arguments were given.
    """
    if params is None:
        return None
    if nargs > len(params.positional) and not params.var_positional:
        raise _Missing(f"takes {len(params.positional)} positional arguments but {nargs} were given")
    filled, rest = params.positional[:nargs], params.positional[nargs:]
    given = set(names)
    for p in rest:
        if p.default is inspect.Parameter.empty:
            if p.kind is _POSITIONAL_ONLY:
                raise _Missing(
                    f"requires the positional-only parameter {p.name!r}, which keyword arguments cannot fill"
                )
            if p.name not in given:
                raise _Missing(f"requires the parameter {p.name!r}")
    for p in params.keyword_only:
        if p.default is inspect.Parameter.empty and p.name not in given:
            raise _Missing(f"requires the keyword-only parameter {p.name!r}")
    if params.var_keyword:
        # ``**kwargs`` takes everything, except names already filled positionally, which Python
        # would reject as "multiple values".
        taken = {p.name for p in filled if p.kind is _POSITIONAL_OR_KEYWORD}
        return tuple(n for n in names if n not in taken) if taken & given else None
    accepted = {p.name for p in rest if p.kind is _POSITIONAL_OR_KEYWORD}
    accepted.update(p.name for p in params.keyword_only)
    return tuple(n for n in names if n in accepted)


def _same_hook(current: object, expected: object) -> bool:
    """Whether a freshly looked-up hook is the one a plan was compiled for."""
    if current is expected:
        return True
    # Bound methods are new objects on every lookup; compare what they bind.
    return (
        type(current) is types.MethodType
        and type(expected) is types.MethodType
        and current.__func__ is expected.__func__
        and current.__self__ is expected.__self__
    )


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _class_attribute(cls: type, name: str) -> object:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return _MISSING


def _owner(callback: object) -> str:
    # ``Outer.Inner`` reads well; ``make.<locals>.Inner`` does not.
    return type(callback).__qualname__.rpartition("<locals>.")[2]


def _unused_plan(count: int, hook: str) -> Plan:
    """The plan of a hook that none of ``count`` callbacks has: it checks that this still holds.

    It asks only whether each callback in the list now has the hook, whichever objects they are,
    and ignores the arguments: no callback is called, so nothing else can change the result. A
    callback appended, replaced or given the hook (on the instance or its class) makes it stale.
    """
    checks = " or ".join(f"_hasattr(_x{j}, {hook!r})" for j in range(count))
    lines = ["def _plan(_cbs, _args, _kw):"]
    if count:
        lines += ["    try:", f"        {''.join(f'_x{j}, ' for j in range(count))}= _cbs"]
        lines += ["    except ValueError:", "        return _STALE", f"    if {checks}:", "        return _STALE"]
    else:
        lines += ["    if _cbs:", "        return _STALE"]
    lines.append("    return []")
    namespace: dict[str, object] = {}
    code = compile("\n".join(lines), f"<trainwright plan for unused {hook!r}>", "exec")
    exec(code, {"_STALE": _STALE, "_hasattr": hasattr}, namespace)
    return namespace["_plan"]


class Dispatcher:
    """Compiles and caches one plan per hook; ``Fabric`` keeps the plans in ``plans``.

    Args:
        is_global_zero: whether this process is global rank zero; callbacks whose
            ``rank_zero_only`` attribute is true are skipped on the other ranks.
    """

    def __init__(self, is_global_zero: bool = True) -> None:
        self.is_global_zero = is_global_zero
        self.plans: dict[str, Plan] = {}  # the current plan of each hook: the fast path
        self.dispatched: set[str] = set()
        self._compiled: dict[tuple, Plan] = {}  # earlier plans, so that alternating keyword sets don't recompile
        self._signatures: dict[tuple[int, bool], tuple[object, _Params | None]] = {}

    def dispatch(self, callbacks: list, hook: str, args: tuple, kwargs: dict) -> list:
        """Call ``hook`` on ``callbacks`` through a valid plan, compiling one if needed."""
        if not isinstance(hook, str):
            raise TypeError(f"fabric.call() takes the hook name as a string, got {type(hook).__name__}")
        if not _is_identifier(hook):
            raise ValueError(f"fabric.call() got hook name {hook!r}, which is not a valid Python identifier")
        self.dispatched.add(hook)
        names = tuple(kwargs)
        key = (hook, len(args), names, tuple(map(id, callbacks)))
        plan = self._compiled.get(key)
        if plan is not None:
            result = plan(callbacks, args, kwargs)
            if result is not _STALE:
                self.plans[hook] = plan
                return result
        plan = self._compile(callbacks, hook, len(args), names)
        result = plan(callbacks, args, kwargs)
        if result is _STALE:
            # A hook that is a new object at every lookup (say, a property that builds a
            # closure) makes every plan stale at once; such a call runs uncached.
            return self._compile(callbacks, hook, len(args), names, volatile=True)(callbacks, args, kwargs)
        if len(self._compiled) >= _MAX_CACHED_PLANS:
            self._compiled.clear()
        self._compiled[key] = self.plans[hook] = plan
        return result

    def unused_hooks(self, callbacks: Iterable[object], known: Iterable[str] = ()) -> list[UnusedHook]:
        """List the ``on_*`` methods of ``callbacks`` whose name no call has dispatched or ``known`` lists."""
        valid = self.dispatched | set(known)
        candidates = sorted(valid)
        report = []
        for callback in callbacks:
            for name in dir(callback):
                if name.startswith("on_") and name not in valid and callable(getattr(callback, name, None)):
                    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
                    report.append(UnusedHook(_owner(callback), name, close[0] if close else None))
        return report

    def check(self, callbacks: Iterable[object], hook: str, names: Iterable[str]) -> None:
        """Raise the ``HookSignatureError`` that dispatching ``hook`` with keywords ``names`` would raise.

        Nothing is called; callbacks without the hook, or skipped on this rank, are not checked.
        """
        names = tuple(names)
        for callback in callbacks:
            if not self.is_global_zero and getattr(callback, "rank_zero_only", False):
                continue
            fn = getattr(callback, hook, None)
            if callable(fn):
                self._selected(callback, hook, fn, 0, names)

    def _selected(
        self, callback: object, hook: str, fn: object, nargs: int, names: tuple[str, ...]
    ) -> tuple[str, ...] | None:
        try:
            return _select(self._params(fn), nargs, names)
        except _Missing as missing:
            raise HookSignatureError(
                f"callback {_owner(callback)}.{hook}() {missing.reason}, but fabric.call({hook!r}) "
                f"passed keyword arguments {list(names)}"
            ) from None

    def _params(self, hook: object) -> _Params | None:
        bound = type(hook) is types.MethodType
        target = hook.__func__ if bound else hook
        cached = self._signatures.get((id(target), bound))
        if cached is None:
            if len(self._signatures) >= _MAX_CACHED_SIGNATURES:
                self._signatures.clear()  # plans compiled so far keep what they selected
            # The target is stored alongside so that its id cannot be reused while cached.
            cached = self._signatures[(id(target), bound)] = (target, _analyse(hook))
        return cached[1]

    def _compile(self, callbacks: list, hook: str, nargs: int, names: tuple[str, ...], volatile: bool = False) -> Plan:
        """Generate a plan's source for this exact situation and compile it.

        The plan's checks, cheapest first: the callbacks are the same objects, the keyword
        names and positional count are the same, each hook is still the one compiled in
        (neither rebound on the instance nor replaced on the class), a hook that was missing
        is still missing, and, on ranks other than zero, each callback's ``rank_zero_only``
        is what it was. Only then does it call. A ``volatile`` plan calls the hooks found now
        without looking them up again.
        """
        env: dict[str, object] = {
            "_STALE": _STALE,
            "_MISSING": _MISSING,
            "_same_hook": _same_hook,
            "_hasattr": hasattr,
            "_getattr": getattr,
        }
        unpack = [f"_x{j}" for j in range(len(callbacks))]
        guards = [f"_x{j} is not _c{j}" for j in range(len(callbacks))]
        fetches, calls, owners = [], [], []
        missing = 0  # callbacks that lack the hook altogether
        for j, callback in enumerate(callbacks):
            env[f"_c{j}"] = callback
            if not self.is_global_zero:
                # Rank zero runs every callback; elsewhere a change of the flag makes the plan stale.
                skipped = bool(getattr(callback, "rank_zero_only", False))
                guards.append(f"{'not ' if skipped else ''}_getattr(_c{j}, 'rank_zero_only', False)")
                if skipped:
                    continue
            target = self._classify(callback, j, hook, env, guards, fetches, volatile)
            if target is None:
                missing += env[f"_f{j}"] is _MISSING
                continue
            selected = self._selected(callback, hook, env[f"_f{j}"], nargs, names)
            selected = names if selected is None else selected
            if all(_is_identifier(n) for n in selected):
                # Explicit keywords: much cheaper than ``**_kw``, which makes Python unpack a dict.
                passed = [f"{n}=_v{names.index(n)}" for n in selected]
            else:
                passed = ["**{" + ", ".join(f"{n!r}: _v{names.index(n)}" for n in selected) + "}"]
            receiver = [f"_c{j}"] if target == f"_u{j}" else []
            calls.append(f"{target}({', '.join(receiver + (['*_args'] if nargs else []) + passed)})")
            owners.append(
                f"in fabric.call({hook!r}): raised by callback {_owner(callback)}.{hook} (fabric.callbacks[{j}])"
            )
        env["_owners"] = owners
        if missing == len(callbacks):
            return _unused_plan(len(callbacks), hook)
        if calls:
            # A plan that calls nothing (no callback implements the hook) ignores the arguments,
            # so it stays valid whatever a call passes: an unused hook costs these checks only.
            guards[len(callbacks) : len(callbacks)] = [
                "_args" if nargs == 0 else f"len(_args) != {nargs}",
                f"len(_kw) != {len(names)}",
            ]

        lines = ["def _plan(_cbs, _args, _kw):", "    try:"]
        if len(callbacks) > 1:
            lines.append(f"        {', '.join(unpack)} = _cbs")
        elif callbacks:
            lines.append("        _x0, = _cbs")
        else:
            lines.append("        if _cbs: return _STALE")
        lines += [f"        _v{i} = _kw[{n!r}]" for i, n in enumerate(names)] if calls else []
        lines += ["    except (ValueError, KeyError):", "        return _STALE"]
        # An AttributeError in a check means a hook was deleted (from the class, say): stale.
        if guards:
            lines += ["    try:"] + [f"        {fetch}" for fetch in fetches]
            lines += [f"        if {' or '.join(guards)}:", "            return _STALE"]
            lines += ["    except AttributeError:", "        return _STALE"]
        if calls:
            lines += ["    _i = 0", "    try:"]
            for i, call in enumerate(calls):
                lines += [f"        _i = {i}"] if i else []
                lines.append(f"        _r{i} = {call}")
            lines += ["    except BaseException as _e:", "        _e.add_note(_owners[_i])", "        raise"]
        lines.append(f"    return [{', '.join(f'_r{i}' for i in range(len(calls)))}]")
        namespace: dict[str, object] = {}
        exec(compile("\n".join(lines), f"<trainwright plan for {hook!r}>", "exec"), env, namespace)
        return namespace["_plan"]

    @staticmethod
    def _classify(
        callback: object, j: int, hook: str, env: dict, guards: list[str], fetches: list[str], volatile: bool
    ) -> str | None:
        """Add the guards that detect a change of ``callback``'s hook; return what to call, if anything.

        Sets ``env[f"_f{j}"]`` to the hook as found now.
        """
        cls = type(callback)
        instance_dict = getattr(callback, "__dict__", None)
        instance_dict = instance_dict if isinstance(instance_dict, dict) else None
        class_attr = _class_attribute(cls, hook)
        # With ordinary attribute access, a hook is the instance's own attribute or else the
        # class's; anything cleverer (properties, __getattribute__) is looked up on every call.
        # (A C-level ``__getattribute__``, as on SimpleNamespace, is taken to be the generic one.)
        plain = isinstance(cls.__getattribute__, types.WrapperDescriptorType) and not hasattr(class_attr, "__set__")
        value = env[f"_f{j}"] = getattr(callback, hook, _MISSING)
        if plain and instance_dict is not None:
            # The instance dict itself is bound, not re-read per call: replacing an object's
            # whole ``__dict__`` is not a supported way to rebind a hook.
            env[f"_d{j}"] = instance_dict
        if value is _MISSING:
            # Looked up as an attribute of the callback, so that a hook added later to the
            # instance, to its class or to a base class is noticed.
            guards.append(f"_hasattr(_c{j}, {hook!r})")
            return None
        if not callable(value):
            warnings.warn(f"{_owner(callback)}.{hook} is not callable; fabric.call skips it", UserWarning, stacklevel=5)
            guards.append(f"getattr(_c{j}, {hook!r}, _MISSING) is not _f{j}")
            return None
        if plain and instance_dict is not None and hook in instance_dict:
            guards.append(f"_d{j}.get({hook!r}, _MISSING) is not _f{j}")
            return f"_f{j}"
        if plain and type(class_attr) is types.FunctionType:
            env[f"_u{j}"], env[f"_t{j}"] = class_attr, cls
            guards.append(f"_t{j}.{hook} is not _u{j}")
            if instance_dict is not None:
                guards.append(f"{hook!r} in _d{j}")
            return f"_u{j}"  # the plain function, called with the instance: no bound method is made
        if volatile:
            return f"_f{j}"
        fetches.append(f"_m{j} = getattr(_c{j}, {hook!r}, _MISSING)")
        guards.append(f"not _same_hook(_m{j}, _f{j})")
        return f"_m{j}"

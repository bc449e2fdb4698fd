"""The contract of ``Fabric.call``: order, filtering, errors, caching and rebinding."""

import functools
import gc
import types
import warnings
import weakref
from unittest import mock

import pytest

from trainwright import Fabric, HookSignatureError


class TrainingMetricsCallback:
    def __init__(self):
        self.received = None

    def on_train_epoch_end(self, epoch, train_loss):
        self.received = {"epoch": epoch, "train_loss": train_loss}
        return "training"


class ValidationMetricsCallback:
    def __init__(self):
        self.received = None

    def on_train_epoch_end(self, epoch, val_accuracy):
        self.received = {"epoch": epoch, "val_accuracy": val_accuracy}
        return "validation"


class ComprehensiveCallback:
    def __init__(self):
        self.received = None

    def on_train_epoch_end(self, **kwargs):
        self.received = kwargs
        return "comprehensive"


class Recorder:
    """Appends its name to a shared log when its hook runs."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def on_step(self):
        self.log.append(self.name)
        return self.name


SEED_KWARGS = {"epoch": 5, "train_loss": 0.1, "val_accuracy": 0.95, "learning_rate": 0.001}


@pytest.fixture
def fabric():
    return Fabric(accelerator="cpu")


def test_seed_example_filters_each_callback():
    """The example from the callbacks guide works as written: each callback gets only what it names."""
    training, validation, comprehensive = (
        TrainingMetricsCallback(),
        ValidationMetricsCallback(),
        ComprehensiveCallback(),
    )
    fabric = Fabric(callbacks=[training, validation, comprehensive])
    results = fabric.call("on_train_epoch_end", epoch=5, train_loss=0.1, val_accuracy=0.95, learning_rate=0.001)
    assert results == ["training", "validation", "comprehensive"]
    assert training.received == {"epoch": 5, "train_loss": 0.1}
    assert validation.received == {"epoch": 5, "val_accuracy": 0.95}
    assert comprehensive.received == SEED_KWARGS


def test_results_are_in_callback_order(fabric):
    """Callbacks run in list order and their return values come back in that order."""
    log = []
    fabric.callbacks.extend(Recorder(name, log) for name in "cab")
    assert fabric.call("on_step") == ["c", "a", "b"]
    assert log == ["c", "a", "b"]


@pytest.mark.parametrize(
    "callbacks",
    [
        pytest.param(lambda cbs: tuple(cbs), id="tuple"),
        pytest.param(lambda cbs: iter(cbs), id="iterator"),
        pytest.param(lambda cbs: (c for c in cbs), id="generator"),
        pytest.param(lambda cbs: cbs, id="list"),
    ],
)
def test_any_iterable_of_callbacks_is_accepted(callbacks):
    """A tuple, iterator or generator of callbacks is a sequence of callbacks, not one callback."""
    log = []
    fabric = Fabric(accelerator="cpu", callbacks=callbacks([Recorder("a", log), Recorder("b", log)]))
    assert isinstance(fabric.callbacks, list)
    assert fabric.call("on_step") == ["a", "b"]


def test_single_callback_and_none_are_accepted():
    """One object becomes a one-element list; None becomes an empty list."""
    log = []
    assert Fabric(accelerator="cpu", callbacks=Recorder("x", log)).call("on_step") == ["x"]
    assert Fabric(accelerator="cpu", callbacks=None).callbacks == []


@pytest.mark.parametrize("bad", ["on_step", {"a": 1}, b"xy"])
def test_string_or_mapping_as_callbacks_is_rejected(bad):
    """A string, bytes or dict passed as callbacks is a TypeError naming the argument."""
    with pytest.raises(TypeError, match="callbacks must be one object or an iterable"):
        Fabric(accelerator="cpu", callbacks=bad)


def test_appending_to_callbacks_takes_effect(fabric):
    """fabric.callbacks is a live list: callbacks appended, removed or replaced later are seen."""
    log = []
    fabric.callbacks.append(Recorder("a", log))
    assert fabric.call("on_step") == ["a"]
    fabric.callbacks.append(Recorder("b", log))
    assert fabric.call("on_step") == ["a", "b"]
    fabric.callbacks.pop(0)
    assert fabric.call("on_step") == ["b"]
    fabric.callbacks[0] = Recorder("c", log)
    assert fabric.call("on_step") == ["c"]
    fabric.callbacks = [Recorder("d", log)]
    assert fabric.call("on_step") == ["d"]


def test_equal_but_distinct_callbacks_are_not_confused(fabric):
    """Replacing a callback with a different object that compares equal calls the new object."""

    class Equal:
        def __init__(self, name):
            self.name = name

        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

        def on_step(self):
            return self.name

    fabric.callbacks.append(Equal("old"))
    assert fabric.call("on_step") == ["old"]
    fabric.callbacks[0] = Equal("new")
    assert fabric.call("on_step") == ["new"]


def test_missing_hook_is_skipped_silently(fabric):
    """A callback without the hook is skipped without a warning or error."""
    log = []
    fabric.callbacks += [object(), Recorder("a", log), types.SimpleNamespace()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fabric.call("on_step") == ["a"]
        assert fabric.call("on_never_defined", x=1) == []


def test_non_callable_attribute_warns_and_is_skipped(fabric):
    """A non-callable attribute named like the hook is skipped with a UserWarning naming Class.hook."""

    class Broken:
        on_step = 42

    log = []
    fabric.callbacks += [Broken(), Recorder("a", log)]
    with pytest.warns(UserWarning, match=r"Broken\.on_step is not callable"):
        assert fabric.call("on_step") == ["a"]


def test_fixing_a_non_callable_attribute_takes_effect(fabric):
    """After a non-callable hook attribute is replaced by a function, the next call uses it."""

    class Broken:
        on_step = None

    broken = Broken()
    fabric.callbacks.append(broken)
    with pytest.warns(UserWarning, match="is not callable"):
        assert fabric.call("on_step") == []
    broken.on_step = lambda: "fixed"
    assert fabric.call("on_step") == ["fixed"]


def test_positional_args_pass_through_unchanged(fabric):
    """Positional arguments reach every callback as they are, before the filtered keywords."""

    class Positional:
        def on_batch(self, batch, index, *, scale=1):
            return (batch, index, scale)

    class VarArgs:
        def on_batch(self, *args, **kwargs):
            return (args, kwargs)

    fabric.callbacks += [Positional(), VarArgs()]
    batch = object()
    assert fabric.call("on_batch", batch, 3, scale=2, other=9) == [
        (batch, 3, 2),
        ((batch, 3), {"scale": 2, "other": 9}),
    ]


def test_too_many_positional_args_name_the_callback(fabric):
    """More positional arguments than a hook takes raise a TypeError naming the callback and hook."""

    class Narrow:
        def on_batch(self, batch):
            return batch

    fabric.callbacks.append(Narrow())
    with pytest.raises(TypeError, match=r"Narrow\.on_batch\(\) takes 1 positional arguments but 2 were given"):
        fabric.call("on_batch", 1, 2)


def test_var_keyword_receives_everything(fabric):
    """A **kwargs hook receives every keyword argument, alongside its named parameters."""

    class Mixed:
        def on_x(self, a, **rest):
            return (a, rest)

    fabric.callbacks.append(Mixed())
    assert fabric.call("on_x", a=1, b=2, c=3) == [(1, {"b": 2, "c": 3})]


def test_var_keyword_does_not_receive_names_already_filled_positionally(fabric):
    """A parameter filled positionally is not passed again by keyword to a **kwargs hook."""

    class Mixed:
        def on_x(self, a, **rest):
            return (a, rest)

    fabric.callbacks.append(Mixed())
    assert fabric.call("on_x", 1, a=2, b=3) == [(1, {"b": 3})]


def test_positional_only_names_are_never_passed_by_keyword(fabric):
    """A positional-only parameter with a default keeps its default even when a kwarg shares its name."""

    class PosOnly:
        def on_x(self, value=7, /, other=0):
            return (value, other)

    class PosOnlyKw:
        def on_x(self, value=7, /, **kwargs):
            return (value, kwargs)

    fabric.callbacks += [PosOnly(), PosOnlyKw()]
    # ``**kwargs`` legally receives a key equal to a positional-only name.
    assert fabric.call("on_x", value=1, other=2) == [(7, 2), (7, {"value": 1, "other": 2})]


def test_required_positional_only_parameter_is_reported(fabric):
    """A required positional-only parameter cannot be filled from kwargs: TypeError naming it."""

    class PosOnly:
        def on_x(self, value, /):
            return value

    fabric.callbacks.append(PosOnly())
    with pytest.raises(TypeError, match=r"PosOnly\.on_x\(\) requires the positional-only parameter 'value'"):
        fabric.call("on_x", value=1)
    assert fabric.call("on_x", 5) == [5]


def test_var_positional_name_is_not_a_keyword(fabric):
    """A kwarg named like the *args parameter is not passed to it."""

    class Star:
        def on_x(self, *args, flag=False):
            return (args, flag)

    fabric.callbacks.append(Star())
    assert fabric.call("on_x", args=(1, 2), flag=True) == [((), True)]


def test_keyword_only_parameters_are_filled(fabric):
    """Keyword-only parameters are filled by name; their defaults apply when no kwarg is given."""

    class KwOnly:
        def on_x(self, *, a, b=10):
            return (a, b)

    fabric.callbacks.append(KwOnly())
    assert fabric.call("on_x", a=1, c=3) == [(1, 10)]
    assert fabric.call("on_x", a=1, b=2) == [(1, 2)]


def test_missing_required_parameter_names_callback_hook_and_parameter(fabric):
    """A required parameter no kwarg supplies: TypeError naming the callback, the hook and the parameter."""

    class NeedsLoss:
        def on_train_batch_end(self, loss, batch_idx):
            pass

    log = []
    first = Recorder("first", log)
    first.on_train_batch_end = lambda **kw: log.append("called")
    fabric.callbacks += [first, NeedsLoss()]
    with pytest.raises(TypeError) as excinfo:
        fabric.call("on_train_batch_end", batch_idx=3)
    message = str(excinfo.value)
    assert "NeedsLoss.on_train_batch_end()" in message
    assert "'loss'" in message
    assert "batch_idx" in message  # what was passed, to compare against
    assert log == []  # nothing was dispatched before the error


def test_check_hooks_raises_what_call_would_without_calling_anything(fabric):
    """check_hooks names the callback, hook and parameter as call does, calls nothing, and passes good signatures."""
    log = []

    class Good:
        def on_train_batch_end(self, loss, **rest):
            log.append("called")

    class NeedsStep:
        def on_train_batch_end(self, step):
            log.append("called")

    fabric.callbacks += [Good(), NeedsStep()]
    fabric.check_hooks({"on_fit_start": ["trainer"]})  # neither has it: nothing to check
    with pytest.raises(HookSignatureError, match=r"NeedsStep\.on_train_batch_end\(\) requires the parameter 'step'"):
        fabric.check_hooks({"on_train_batch_end": ["loss", "global_step"]})
    with pytest.raises(HookSignatureError) as from_call:
        fabric.call("on_train_batch_end", loss=1.0, global_step=2)
    assert isinstance(from_call.value, TypeError)
    assert log == []
    fabric.callbacks.pop()
    fabric.check_hooks({"on_train_batch_end": ["loss", "global_step"]})


def test_missing_keyword_only_parameter_is_reported(fabric):
    """A required keyword-only parameter that no kwarg supplies is reported by name."""

    class KwOnly:
        def on_x(self, *, needed):
            pass

    fabric.callbacks.append(KwOnly())
    with pytest.raises(TypeError, match=r"KwOnly\.on_x\(\) requires the keyword-only parameter 'needed'"):
        fabric.call("on_x", other=1)


def test_exception_in_hook_carries_a_note(fabric):
    """An exception raised in a hook propagates unchanged, with a note naming the callback and hook."""

    class Fails:
        def on_x(self, value):
            raise RuntimeError(f"bad value {value}")

    log = []
    fabric.callbacks += [Recorder("ok", log), Fails(), Recorder("after", log)]
    fabric.callbacks[0].on_x = lambda: log.append("ok")
    fabric.callbacks[2].on_x = lambda: log.append("after")
    with pytest.raises(RuntimeError, match="bad value 3") as excinfo:
        fabric.call("on_x", value=3)
    notes = excinfo.value.__notes__
    assert len(notes) == 1
    assert "Fails.on_x" in notes[0]
    assert "fabric.callbacks[1]" in notes[0]
    assert log == ["ok"]  # the callback after the failure did not run


def test_note_names_the_right_callback_each_time(fabric):
    """The note names whichever callback raised, not a neighbour."""

    class Boom:
        def __init__(self, fail):
            self.fail = fail

        def on_x(self):
            if self.fail:
                raise ValueError("boom")

    first, second = Boom(False), Boom(False)
    fabric.callbacks += [first, second]
    fabric.call("on_x")
    second.fail = True
    with pytest.raises(ValueError, match="boom") as excinfo:
        fabric.call("on_x")
    assert "fabric.callbacks[1]" in excinfo.value.__notes__[0]


def test_functools_partial_is_filtered_by_its_remaining_signature(fabric):
    """A partial hook receives only the parameters it leaves open (and may override bound keywords)."""

    def hook(prefix, epoch, loss=None):
        return (prefix, epoch, loss)

    cb = types.SimpleNamespace(on_x=functools.partial(hook, "p"))
    fabric.callbacks.append(cb)
    assert fabric.call("on_x", epoch=1, unrelated=2) == [("p", 1, None)]
    assert fabric.call("on_x", epoch=1, loss=0.5) == [("p", 1, 0.5)]


def test_callable_object_is_filtered_by_its_call_signature(fabric):
    """A callable object used as a hook is filtered by its __call__ signature."""

    class Hook:
        def __call__(self, epoch):
            return epoch * 2

    class WithCallableAttribute:
        on_x = Hook()  # a class attribute that is not a function: looked up per call

    fabric.callbacks += [types.SimpleNamespace(on_x=Hook()), WithCallableAttribute()]
    assert fabric.call("on_x", epoch=4, other=1) == [8, 8]


def test_builtin_without_signature_receives_every_kwarg(fabric):
    """A hook whose signature cannot be inspected (e.g. the builtin dict) receives every kwarg."""
    fabric.callbacks.append(types.SimpleNamespace(on_x=dict))
    assert fabric.call("on_x", a=1, b=2) == [{"a": 1, "b": 2}]


def test_staticmethod_and_classmethod_hooks(fabric):
    """Static and class methods are dispatched with filtering like ordinary methods."""

    class Static:
        @staticmethod
        def on_x(a):
            return ("static", a)

    class Class:
        @classmethod
        def on_x(cls, b):
            return (cls.__name__, b)

    fabric.callbacks += [Static(), Class()]
    assert fabric.call("on_x", a=1, b=2) == [("static", 1), ("Class", 2)]


def test_slotted_callback_without_instance_dict(fabric):
    """A callback with __slots__ (no instance __dict__) is dispatched normally."""

    class Slotted:
        __slots__ = ("value",)

        def __init__(self):
            self.value = 3

        def on_x(self, a):
            return a + self.value

    fabric.callbacks.append(Slotted())
    assert fabric.call("on_x", a=1) == [4]
    assert fabric.call("on_x", a=2) == [5]


def test_rebinding_a_hook_on_an_instance_takes_effect(fabric):
    """A hook rebound on the instance after the first call is used, with its own signature, next time."""

    class Cb:
        def on_x(self, a):
            return ("method", a)

    cb = Cb()
    fabric.callbacks.append(cb)
    assert fabric.call("on_x", a=1, b=2) == [("method", 1)]
    cb.on_x = lambda b: ("lambda", b)
    assert fabric.call("on_x", a=1, b=2) == [("lambda", 2)]
    cb.on_x = types.MethodType(lambda self, a, b: ("bound", a, b), cb)
    assert fabric.call("on_x", a=1, b=2) == [("bound", 1, 2)]
    del cb.on_x
    assert fabric.call("on_x", a=1, b=2) == [("method", 1)]


def test_adding_a_hook_to_an_instance_that_lacked_it(fabric):
    """A hook set on an instance that had none when first dispatched is called next time."""
    cb = types.SimpleNamespace()
    fabric.callbacks.append(cb)
    assert fabric.call("on_x", a=1) == []
    cb.on_x = lambda a: a
    assert fabric.call("on_x", a=1) == [1]


def test_patching_the_class_takes_effect(fabric):
    """Replacing the hook on the class (e.g. mock.patch.object) is seen on the next call."""

    class Cb:
        def on_x(self, a):
            return a

    fabric.callbacks.append(Cb())
    assert fabric.call("on_x", a=1) == [1]
    with mock.patch.object(Cb, "on_x", lambda self, b=0: ("patched", b)):
        assert fabric.call("on_x", a=1, b=2) == [("patched", 2)]
    assert fabric.call("on_x", a=1, b=2) == [1]


def test_adding_a_hook_to_the_class_after_the_first_call(fabric):
    """A hook added to a callback's class (or a base class) after a call that skipped it is called next time."""

    class Base:
        pass

    class Cb(Base):
        pass

    class Slotted:
        __slots__ = ()

    fabric.callbacks += [Cb(), Slotted()]
    assert fabric.call("on_x", a=1) == []
    Base.on_x = lambda self, a: ("base", a)
    assert fabric.call("on_x", a=1) == [("base", 1)]
    Cb.on_x = lambda self, a: ("class", a)
    Slotted.on_x = lambda self: "slotted"
    assert fabric.call("on_x", a=2) == [("class", 2), "slotted"]
    del Cb.on_x, Base.on_x, Slotted.on_x
    assert fabric.call("on_x", a=3) == []


def test_signature_analysis_is_cached(fabric):
    """Signatures are inspected once per function, not on every call."""

    class Cb:
        def on_x(self, a):
            return a

    fabric.callbacks += [Cb(), Cb()]
    with mock.patch("trainwright._dispatch.inspect.signature", wraps=__import__("inspect").signature) as spy:
        for i in range(50):
            assert fabric.call("on_x", a=i, b=0) == [i, i]
    assert spy.call_count == 1


def test_changing_keyword_names_recomputes_the_filter(fabric):
    """Calls of one hook with different keyword sets each get the right filtering."""

    class Cb:
        def on_x(self, a=None, b=None):
            return (a, b)

    fabric.callbacks.append(Cb())
    for _ in range(3):
        assert fabric.call("on_x", a=1) == [(1, None)]
        assert fabric.call("on_x", b=2) == [(None, 2)]
        assert fabric.call("on_x", b=2, a=1, c=3) == [(1, 2)]
        assert fabric.call("on_x") == [(None, None)]


def test_kwargs_that_are_not_identifiers(fabric):
    """Keyword names that are not identifiers (e.g. 'val/loss') still reach **kwargs hooks."""

    class Everything:
        def on_x(self, **kwargs):
            return kwargs

    fabric.callbacks.append(Everything())
    assert fabric.call("on_x", **{"val/loss": 1.0, "step": 2}) == [{"val/loss": 1.0, "step": 2}]


def test_callback_cannot_mutate_the_callers_kwargs(fabric):
    """A **kwargs hook that mutates its dict does not change what the next callback receives."""

    class Mutator:
        def on_x(self, **kwargs):
            kwargs["a"] = "changed"

    class Reader:
        def on_x(self, a):
            return a

    fabric.callbacks += [Mutator(), Reader()]
    assert fabric.call("on_x", a="original") == [None, "original"]


@pytest.mark.parametrize("hook", ["on-x", "class", "", "1st"])
def test_invalid_hook_names_are_rejected(fabric, hook):
    """A hook name that is not an identifier raises ValueError naming it."""
    with pytest.raises(ValueError, match="not a valid Python identifier"):
        fabric.call(hook)


def test_non_string_hook_name_is_rejected(fabric):
    """A hook name that is not a string raises TypeError."""
    with pytest.raises(TypeError, match="hook name as a string"):
        fabric.call(42)


def test_hook_calling_fabric_call_recursively(fabric):
    """A hook may itself call fabric.call (for another hook or the same one)."""

    class Outer:
        def on_outer(self, depth):
            return fabric.call("on_inner", depth=depth + 1)

        def on_inner(self, depth):
            return depth

    fabric.callbacks.append(Outer())
    assert fabric.call("on_outer", depth=0) == [[1]]


class RankZeroOnly:
    rank_zero_only = True

    def on_x(self):
        return "rank-zero"


def test_rank_zero_only_callback_runs_on_rank_zero(fabric):
    """A callback declaring rank_zero_only runs on global rank zero."""
    fabric.callbacks += [RankZeroOnly(), types.SimpleNamespace(on_x=lambda: "everywhere")]
    assert fabric.call("on_x") == ["rank-zero", "everywhere"]


def test_rank_zero_only_callback_is_skipped_on_other_ranks():
    """On a rank other than zero, rank_zero_only callbacks are skipped and the others still run."""
    from trainwright._dispatch import Dispatcher

    dispatcher = Dispatcher(is_global_zero=False)
    callbacks = [RankZeroOnly(), types.SimpleNamespace(on_x=lambda: "everywhere")]
    assert dispatcher.dispatch(callbacks, "on_x", (), {}) == ["everywhere"]
    assert dispatcher.plans["on_x"](callbacks, (), {}) == ["everywhere"]


def dispatch_like_fabric(dispatcher, callbacks: list, hook: str, **kwargs) -> list:
    """What ``Fabric.call`` does: the cached plan first, the dispatcher when the plan is stale."""
    from trainwright._dispatch import _STALE

    plan = dispatcher.plans.get(hook)
    result = _STALE if plan is None else plan(callbacks, (), kwargs)
    return dispatcher.dispatch(callbacks, hook, (), kwargs) if result is _STALE else result


def test_changing_rank_zero_only_after_the_first_call_takes_effect():
    """On a rank other than zero, setting or clearing rank_zero_only after a call is honoured by the next call."""
    from trainwright._dispatch import Dispatcher

    class Switchable:
        rank_zero_only = False

        def on_x(self):
            return "switchable"

    dispatcher = Dispatcher(is_global_zero=False)
    cb = Switchable()
    callbacks = [cb, types.SimpleNamespace(on_x=lambda: "everywhere")]
    for _ in range(2):  # the second round runs the cached plans
        cb.rank_zero_only = False
        assert dispatch_like_fabric(dispatcher, callbacks, "on_x") == ["switchable", "everywhere"]
        cb.rank_zero_only = True
        assert dispatch_like_fabric(dispatcher, callbacks, "on_x") == ["everywhere"]
    del cb.rank_zero_only
    Switchable.rank_zero_only = True  # on the class, too
    assert dispatch_like_fabric(dispatcher, callbacks, "on_x") == ["everywhere"]


def test_hooks_rebuilt_on_every_lookup_are_not_all_kept_alive(fabric):
    """A hook that is a new function at every lookup is not cached forever: most of them are freed."""
    made = []

    class Volatile:
        @property
        def on_x(self):
            def hook(a):
                return a

            made.append(weakref.ref(hook))
            return hook

    fabric.callbacks.append(Volatile())
    calls = 2000
    for i in range(calls):
        assert fabric.call("on_x", a=i) == [i]
    gc.collect()
    alive = sum(ref() is not None for ref in made)
    assert len(made) >= calls
    assert alive <= calls // 4, f"{alive} of {len(made)} hooks are still alive"


def test_property_hook_is_looked_up_on_every_call(fabric):
    """A hook provided by a property is re-read on every call, so a changed property result is used."""

    class Switching:
        def __init__(self):
            self.mode = "a"

        @property
        def on_x(self):
            return (lambda a: ("a", a)) if self.mode == "a" else (lambda b: ("b", b))

    cb = Switching()
    fabric.callbacks.append(cb)
    assert fabric.call("on_x", a=1, b=2) == [("a", 1)]
    cb.mode = "b"
    assert fabric.call("on_x", a=1, b=2) == [("b", 2)]


def test_custom_getattr_callback(fabric):
    """A callback whose hooks come from __getattr__ is dispatched, and a changed answer is seen."""

    class Dynamic:
        def __init__(self):
            self.answer = lambda a: a

        def __getattr__(self, name):
            if name == "on_x":
                return self.answer
            raise AttributeError(name)

    cb = Dynamic()
    fabric.callbacks.append(cb)
    assert fabric.call("on_x", a=3) == [3]
    cb.answer = lambda a: -a
    assert fabric.call("on_x", a=3) == [-3]


def test_a_keyword_named_hook_reaches_the_callbacks(fabric):
    """The hook name is positional-only, so a keyword argument called 'hook' is passed on like any other."""
    fabric.callbacks.append(types.SimpleNamespace(on_x=lambda hook: hook))
    assert fabric.call("on_x", hook="value") == ["value"]


def test_non_callable_warning_is_given_once_not_per_call(fabric):
    """The warning about a non-callable hook comes with the first dispatch, not on every call."""

    class Broken:
        on_step = 1

    fabric.callbacks.append(Broken())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")  # so that repeats would be recorded, not deduplicated
        for _ in range(5):
            fabric.call("on_step")
    assert [str(w.message) for w in record] == ["Broken.on_step is not callable; fabric.call skips it"]
    assert record[0].filename == __file__  # points at the fabric.call line, not into trainwright

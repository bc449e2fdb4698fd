"""``Fabric.call`` for a hook that no callback implements: answered at once, until a change to the
callbacks gives some callback the hook."""

import types
import warnings
from unittest import mock

import pytest

from trainwright import Fabric, HookSignatureError


class Quiet:
    """A callback with hooks, none of them ``on_x``."""

    def on_other(self):
        return "other"


class Implements:
    def __init__(self, name="implements"):
        self.name = name

    def on_x(self, a):
        return (self.name, a)


def appended(fabric, _):
    fabric.callbacks.append(Implements())


def inserted_first(fabric, _):
    fabric.callbacks.insert(0, Implements())


def replaced_in_place(fabric, _):
    fabric.callbacks[1] = Implements()  # same length, same place


def removed_then_replaced(fabric, _):
    fabric.callbacks.pop()
    fabric.callbacks.append(Implements())


def list_assigned(fabric, _):
    fabric.callbacks = [Quiet(), Implements(), object()]


def set_on_an_instance(fabric, quiet):
    quiet.on_x = lambda a: ("implements", a)


def added_to_the_class(fabric, quiet):
    class Late(Quiet):
        pass

    fabric.callbacks[1] = late = Late()
    assert fabric.call("on_x", a=0) == []  # an unused plan for a list that holds the new class
    Late.on_x = lambda self, a: ("implements", a)
    assert late.on_x(1) == ("implements", 1)


CHANGES = [
    appended,
    inserted_first,
    replaced_in_place,
    removed_then_replaced,
    list_assigned,
    set_on_an_instance,
    added_to_the_class,
]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__ for c in CHANGES])
def test_a_change_that_gives_a_callback_the_hook_takes_effect_at_once(change):
    """Appending, inserting, replacing or removing callbacks, assigning a new list, or setting the hook on an
    instance or its class after calls that found no implementer: the next call runs the new hook, filtered."""
    quiet = Quiet()
    fabric = Fabric(accelerator="cpu", callbacks=[quiet, Quiet(), object()])
    for kwargs in ({"a": 1}, {"a": 1, "b": 2}, {}):  # the answer for an unused hook holds for any arguments
        assert fabric.call("on_x", **kwargs) == []
    change(fabric, quiet)
    assert fabric.call("on_x", a=1, b=2) == [("implements", 1)]
    assert fabric.call("on_other") == ["other"] * sum(isinstance(c, Quiet) for c in fabric.callbacks)


def test_an_unused_hook_is_answered_without_the_dispatcher_whatever_the_arguments():
    """Once a hook is known to be unused, calls with other keyword names or positional arguments are answered
    by the cached check alone; they never go back to the dispatcher that compiles plans."""
    fabric = Fabric(accelerator="cpu", callbacks=[Quiet(), Quiet()])
    assert fabric.call("on_x", loss=1.0) == []
    with mock.patch.object(fabric._dispatcher, "dispatch", wraps=fabric._dispatcher.dispatch) as dispatch:
        for kwargs in ({"loss": 1.0, "step": 2}, {"batch": 3}, {}, {"loss": 1.0}):
            assert fabric.call("on_x", **kwargs) == []
        assert fabric.call("on_x", 1, 2, step=3) == []
        assert dispatch.call_count == 0
        fabric.callbacks.append(Implements())
        assert fabric.call("on_x", a=4) == [("implements", 4)]
        assert dispatch.call_count == 1  # the change is seen, and the hook gets a plan that calls it


def test_removing_the_last_implementer_and_adding_one_back():
    """A hook whose only implementer is removed returns [] and calls nothing; the order is kept when callbacks
    that implement it are added again."""
    first = Implements("first")
    fabric = Fabric(accelerator="cpu", callbacks=[Quiet(), first])
    assert fabric.call("on_x", a=1) == [("first", 1)]
    fabric.callbacks.remove(first)
    assert fabric.call("on_x", a=2) == []
    fabric.callbacks[:0] = [Implements("second")]
    fabric.callbacks.append(first)
    assert fabric.call("on_x", a=3) == [("second", 3), ("first", 3)]


def test_the_contract_holds_for_a_hook_that_becomes_implemented():
    """A callback that gains the hook later still gets the signature check, the non-callable warning and
    the note on exceptions, exactly as if it had been there from the start."""
    quiet = Quiet()
    fabric = Fabric(accelerator="cpu", callbacks=[quiet])
    assert fabric.call("on_x", b=1) == []
    quiet.on_x = lambda a: a
    with pytest.raises(HookSignatureError, match=r"Quiet\.on_x\(\) requires the parameter 'a'"):
        fabric.call("on_x", b=1)
    quiet.on_x = "not callable"
    with pytest.warns(UserWarning, match=r"Quiet\.on_x is not callable"):
        assert fabric.call("on_x", b=1) == []
    quiet.on_x = lambda a: 1 / 0
    with pytest.raises(ZeroDivisionError) as raised:
        fabric.call("on_x", a=1)
    assert "raised by callback Quiet.on_x (fabric.callbacks[0])" in raised.value.__notes__[0]


def test_a_hook_called_only_while_unused_is_not_reported_as_unused():
    """unused_hooks counts a hook as dispatched even when no callback implemented it at the time."""
    fabric = Fabric(accelerator="cpu", callbacks=[Quiet()])
    assert fabric.call("on_x", a=1) == []
    fabric.callbacks.append(Implements())
    assert [str(u) for u in fabric.unused_hooks()] == ["Quiet.on_other was never called"]


def test_no_callbacks_at_all():
    """With no callbacks every hook returns [] without a warning, and a callback appended later is called."""
    fabric = Fabric(accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fabric.call("on_x", a=1) == []
        assert fabric.call("on_x") == []
    fabric.callbacks.append(types.SimpleNamespace(on_x=lambda a: a))
    assert fabric.call("on_x", a=5) == [5]


def test_on_another_rank_a_hook_only_rank_zero_callbacks_have_is_unused_until_one_is_not():
    """On a rank other than zero, a hook that only rank_zero_only callbacks implement calls nothing, whatever
    the arguments; clearing the flag makes the next call run it, filtered."""
    from trainwright._dispatch import _STALE, Dispatcher

    class RankZero(Implements):
        rank_zero_only = True

    dispatcher = Dispatcher(is_global_zero=False)
    callbacks = [RankZero(), Quiet()]

    def call(**kwargs):  # what Fabric.call does: the cached plan first, the dispatcher when it is stale
        plan = dispatcher.plans.get("on_x")
        result = _STALE if plan is None else plan(callbacks, (), kwargs)
        return dispatcher.dispatch(callbacks, "on_x", (), kwargs) if result is _STALE else result

    assert call(a=1) == []
    assert dispatcher.plans["on_x"](callbacks, (), {"b": 2}) == []  # the same plan, other arguments
    callbacks[0].rank_zero_only = False
    assert call(a=3, b=4) == [("implements", 3)]

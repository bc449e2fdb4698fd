"""``Fabric.unused_hooks``: on_* methods that no call dispatched, with a suggestion."""

from trainwright import Fabric, UnusedHook


class Typo:
    def on_train_epoch_ned(self):  # the typo this feature exists for
        pass

    def on_train_batch_end(self):
        pass

    def helper(self):  # not a hook: not reported
        pass


def test_typo_is_reported_with_a_suggestion():
    """A misspelt hook is reported with the dispatched hook it most resembles."""
    fabric = Fabric(accelerator="cpu", callbacks=[Typo()])
    fabric.call("on_train_epoch_end")
    fabric.call("on_train_batch_end")
    report = fabric.unused_hooks()
    assert report == [UnusedHook("Typo", "on_train_epoch_ned", "on_train_epoch_end")]
    assert str(report[0]) == "Typo.on_train_epoch_ned was never called; did you mean 'on_train_epoch_end'?"


def test_dispatched_hooks_are_not_reported():
    """Hooks that were dispatched at least once are not reported, even if nothing else was."""
    fabric = Fabric(accelerator="cpu", callbacks=[Typo()])
    fabric.call("on_train_epoch_ned")
    fabric.call("on_train_batch_end")
    assert fabric.unused_hooks() == []


def test_known_hooks_are_not_reported_and_are_suggested():
    """Hooks listed as known count as valid, and serve as suggestions before they ever fire."""
    fabric = Fabric(accelerator="cpu", callbacks=[Typo()])
    report = fabric.unused_hooks(known=["on_train_batch_end", "on_train_epoch_end"])
    assert report == [UnusedHook("Typo", "on_train_epoch_ned", "on_train_epoch_end")]


def test_unrelated_name_has_no_suggestion():
    """A hook resembling nothing dispatched is reported without a suggestion."""

    class Odd:
        def on_something_else_entirely(self):
            pass

    fabric = Fabric(accelerator="cpu", callbacks=[Odd()])
    fabric.call("on_train_batch_end")
    (item,) = fabric.unused_hooks()
    assert item.suggestion is None
    assert str(item) == "Odd.on_something_else_entirely was never called"

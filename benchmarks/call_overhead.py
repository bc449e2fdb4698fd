"""fabric.call against calling the callbacks directly, and against Lightning Fabric's call.

The case from the brief: three callbacks with different signatures, one callback without the
hook, and four keyword arguments; and, on the same callbacks, a hook that none of them has. The
callbacks do what small metric callbacks do (store what they receive), so the direct baseline is
real work, not an empty call.
"""

from __future__ import annotations

from collections.abc import Callable

from _harness import Result, compare, optional_lightning_fabric, table

from trainwright import Fabric


class TrainingMetrics:
    def on_train_epoch_end(self, epoch, train_loss):
        self.last = (epoch, train_loss)


class ValidationMetrics:
    def on_train_epoch_end(self, epoch, val_accuracy):
        self.best = max(getattr(self, "best", 0.0), val_accuracy)


class Everything:
    def on_train_epoch_end(self, **kwargs):
        self.seen = kwargs


class Unrelated:
    def on_fit_start(self):
        pass


def run(number: int = 5_000, rounds: int = 101) -> dict[str, Result]:
    callbacks = [TrainingMetrics(), ValidationMetrics(), Everything(), Unrelated()]
    a, b, c, _ = callbacks

    def direct(n: int) -> None:
        for epoch in range(n):
            a.on_train_epoch_end(epoch=epoch, train_loss=0.1)
            b.on_train_epoch_end(epoch=epoch, val_accuracy=0.95)
            c.on_train_epoch_end(epoch=epoch, train_loss=0.1, val_accuracy=0.95, learning_rate=0.001)

    def through(fabric) -> Callable[[int], None]:
        def dispatch(n: int) -> None:
            call = fabric.call
            for epoch in range(n):
                call("on_train_epoch_end", epoch=epoch, train_loss=0.1, val_accuracy=0.95, learning_rate=0.001)

        return dispatch

    def unused(fabric) -> Callable[[int], None]:
        # A hook that a loop fires but no callback implements: it should cost next to nothing.
        def dispatch(n: int) -> None:
            call = fabric.call
            for epoch in range(n):
                call("on_validation_end", epoch=epoch, train_loss=0.1, val_accuracy=0.95, learning_rate=0.001)

        return dispatch

    trainwright = Fabric(accelerator="cpu", callbacks=callbacks)
    variants = {
        "direct calls": direct,
        "trainwright Fabric.call": through(trainwright),
        "trainwright Fabric.call, a hook no callback has": unused(trainwright),
    }
    lightning_cls = optional_lightning_fabric()
    if lightning_cls is not None:
        variants["Lightning Fabric.call"] = through(lightning_cls(accelerator="cpu", devices=1, callbacks=callbacks))
    # Lightning's call is ~50x slower: fewer iterations keep its rounds as short as the others'.
    return compare(variants, number, rounds, scale={"Lightning Fabric.call": 50})


def report(results: dict[str, Result]) -> str:
    rows = [(name, f"{r.seconds * 1e6:.3f} µs", f"{r.ratio:.2f}×") for name, r in results.items()]
    text = table(rows, ("variant", "per dispatch", "vs direct calls"))
    if "Lightning Fabric.call" in results:
        speedup = results["Lightning Fabric.call"].ratio / results["trainwright Fabric.call"].ratio
        text += f"\n\ntrainwright's `call` is {speedup:.0f}× faster than Lightning Fabric's on this case."
    return text


if __name__ == "__main__":
    print(report(run()))

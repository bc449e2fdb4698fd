"""Property tests: random hook signatures against random arguments.

The oracle is Python itself: calling the hook directly with the arguments that the filtering
rules select decides whether they fit its signature. ``fabric.call`` must then return exactly what the hook
returns, or raise the documented TypeError naming the callback and the hook.
"""

import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwright import Fabric

NAMES = ["a", "b", "c", "d", "e"]
KINDS = [
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
]


@st.composite
def signatures(draw):
    """A valid signature over some of NAMES, possibly with *args and **kwargs."""
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    kinds = sorted(draw(st.lists(st.sampled_from(KINDS), min_size=len(names), max_size=len(names))))
    params, seen_default = [], False
    for name, kind in zip(names, kinds, strict=True):
        # After a positional parameter with a default, the next positional ones need one too.
        has_default = draw(st.booleans()) or (seen_default and kind is not inspect.Parameter.KEYWORD_ONLY)
        seen_default |= has_default and kind is not inspect.Parameter.KEYWORD_ONLY
        params.append(
            inspect.Parameter(name, kind, default=f"default-{name}" if has_default else inspect.Parameter.empty)
        )
    if draw(st.booleans()):
        position = sum(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params)
        params.insert(position, inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL))
    if draw(st.booleans()):
        params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def make_hook(signature: inspect.Signature):
    """A function with ``signature`` that returns the arguments it was called with, by name."""
    source = f"def hook{signature}:\n    return dict(locals())\n"
    namespace = {}
    exec(source, namespace)  # the signature's defaults are plain strings, so its text is valid source
    return namespace["hook"]


def expected_keywords(signature: inspect.Signature, nargs: int, kwargs: dict) -> dict:
    """The documented filtering rules, stated directly."""
    kind = inspect.Parameter
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
    # Filled positionally, so passing it by keyword too would be "multiple values".
    filled = {p.name for p in positional[:nargs] if p.kind is kind.POSITIONAL_OR_KEYWORD}
    if any(p.kind is kind.VAR_KEYWORD for p in params):
        return {k: v for k, v in kwargs.items() if k not in filled}
    accepted = {p.name for p in params if p.kind in (kind.POSITIONAL_OR_KEYWORD, kind.KEYWORD_ONLY)} - filled
    return {k: v for k, v in kwargs.items() if k in accepted}


class Holder:
    pass


@settings(max_examples=300, deadline=None)
@given(
    signature=signatures(),
    nargs=st.integers(min_value=0, max_value=3),
    kwargs=st.dictionaries(st.sampled_from([*NAMES, "args", "kwargs", "z"]), st.integers(), max_size=6),
)
def test_call_succeeds_exactly_when_the_filtered_arguments_bind(signature, nargs, kwargs):
    """fabric.call returns the hook's result when the filtered arguments bind, else the documented TypeError."""
    hook = make_hook(signature)
    callback = Holder()
    callback.on_x = hook
    fabric = Fabric(accelerator="cpu", callbacks=[callback])
    args = tuple(f"positional-{i}" for i in range(nargs))
    selected = expected_keywords(signature, nargs, kwargs)
    try:
        expected = hook(*args, **selected)
    except TypeError:
        binds = False
    else:
        binds = True
    for _ in range(2):  # the first call compiles a plan, the second runs the cached one
        if binds:
            assert fabric.call("on_x", *args, **kwargs) == [expected]
        else:
            with pytest.raises(TypeError, match=r"callback Holder\.on_x\(\) "):
                fabric.call("on_x", *args, **kwargs)

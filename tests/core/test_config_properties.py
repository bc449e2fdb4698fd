"""Property tests for the config parser: random values, random flags and random TOML tables.

The promises: a value written as a flag reads back as itself; whatever the input, the parser
either returns a config or raises ``ConfigError`` (never another exception); a TOML value is
accepted exactly when it has the field's type; and the last flag for a field wins.
"""

import dataclasses
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwright.config import ConfigError, apply_mapping, apply_overrides


@dataclasses.dataclass
class Inner:
    depth: int = 1
    rate: float = 0.5


@dataclasses.dataclass
class Settings:
    count: int = 0
    scale: float = 1.0
    flag: bool = False
    name: str = "x"
    mode: Literal["fast", "slow"] = "fast"
    limit: int | None = None
    sizes: list[int] = dataclasses.field(default_factory=list)
    path: Path = Path("runs")
    inner: Inner = dataclasses.field(default_factory=Inner)


FIELDS = [f.name for f in dataclasses.fields(Settings)] + ["inner.depth", "inner.rate"]

ints = st.integers(min_value=-(10**12), max_value=10**12)
floats = st.floats(allow_nan=False)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)

# Each field: how to draw a value, and how to write it as a flag.
VALUES = {
    "count": (ints, str),
    "scale": (floats, repr),
    "flag": (st.booleans(), lambda v: "true" if v else "false"),
    "name": (texts, str),
    "mode": (st.sampled_from(["fast", "slow"]), str),
    "limit": (st.none() | ints, lambda v: "none" if v is None else str(v)),
    "sizes": (st.lists(ints, max_size=5), lambda v: ",".join(map(str, v))),
    "path": (texts.filter(lambda t: t.strip() not in ("", ".")).map(Path), str),
    "inner.depth": (ints, str),
    "inner.rate": (floats, repr),
}


def get(config, dotted):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


@given(st.data())
def test_a_value_written_as_a_flag_reads_back_as_itself(data):
    names = data.draw(st.lists(st.sampled_from(list(VALUES)), unique=True, min_size=1))
    values = {name: data.draw(VALUES[name][0], label=name) for name in names}
    flags = [f"--{name.replace('_', '-')}={VALUES[name][1](value)}" for name, value in values.items()]
    config = apply_overrides(Settings(), flags)
    for name, value in values.items():
        got = get(config, name)
        assert got == value, (name, value, got)
        assert type(got) is type(value), (name, value, got)


@given(st.lists(texts | st.builds(lambda n, v: f"--{n}={v}", st.sampled_from(FIELDS), texts), max_size=4))
def test_any_flags_give_a_config_or_a_config_error(args):
    try:
        config = apply_overrides(Settings(), args)
    except ConfigError as error:
        message = str(error)
    else:
        message = None
        assert isinstance(config, Settings)
    assert message is None or message.strip()  # an error always says something


@given(st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True).filter(lambda n: n not in FIELDS), ints)
def test_an_unknown_flag_is_named(name, value):
    with pytest.raises(ConfigError, match=f"unknown option --{name.replace('_', '-')}"):
        apply_overrides(Settings(), [f"--{name}={value}"])


@given(st.sampled_from(["count", "limit", "inner.depth"]), ints, ints)
def test_the_last_flag_for_a_field_wins(name, first, second):
    config = apply_overrides(Settings(), [f"--{name}={first}", f"--{name}={second}"])
    assert get(config, name) == second


containers = st.lists(ints, max_size=3) | st.dictionaries(texts, ints, max_size=2)
TOML_VALUES = st.none() | st.booleans() | ints | floats | texts | containers


def accepts(field: str, value: object) -> bool:
    """The oracle: does ``value`` (as parsed TOML) have the type of ``field``?"""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return {
        "count": is_int,
        "scale": is_int or isinstance(value, float),
        "flag": isinstance(value, bool),
        "name": isinstance(value, str),
        "mode": value in ("fast", "slow") and isinstance(value, str),
        # TOML has no null: None comes from a file as "none" (or "null"), as it does from a flag.
        "limit": is_int or (isinstance(value, str) and value.strip().lower() in ("none", "null")),
        "sizes": isinstance(value, list),
        "path": isinstance(value, str),
    }[field]


@given(st.sampled_from(["count", "scale", "flag", "name", "mode", "limit", "sizes", "path"]), TOML_VALUES)
def test_a_toml_value_is_accepted_exactly_when_it_has_the_fields_type(field, value):
    if not accepts(field, value):
        with pytest.raises(ConfigError, match=f"{field} = "):
            apply_mapping(Settings(), {field: value})
        return
    config = apply_mapping(Settings(), {field: value})
    expected = None if field == "limit" and isinstance(value, str) else Path(value) if field == "path" else value
    assert get(config, field) == expected


def test_property_tests_have_no_deadline():
    """The property tests run under the repository's Hypothesis profile, which drops the 200 ms deadline."""
    assert settings().deadline is None

"""dump_toml: a config written as TOML reads back equal through load_config, or fails naming the field."""

import dataclasses
import enum
import math
import tomllib
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainwright.config import dump_toml, load_config


class Color(enum.Enum):
    RED = "red"
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Schedule:
    warmup: int = 0
    min_lr: float = 0.0
    kind: Literal["cosine", "linear"] = "cosine"


@dataclasses.dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Schedule = dataclasses.field(default_factory=Schedule)


@dataclasses.dataclass
class Config:
    name: str  # no default: the file must hold it
    steps: int = 10
    scale: float = 1.0
    amp: bool = False
    run_dir: Path = Path("runs")
    limit: int | None = None
    note: str | None = None
    sizes: list[int] = dataclasses.field(default_factory=list)
    labels: frozenset[str] = frozenset()
    color: Color = Color.RED
    level: Level = Level.LOW
    choice: int | str = 0
    table: dict[str, float] = dataclasses.field(default_factory=dict)
    optim: Optim = dataclasses.field(default_factory=Optim)
    derived: int = dataclasses.field(default=0, init=False)


ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False)  # NaN never equals itself; infinities are fine
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
configs = st.builds(
    Config,
    name=texts,
    steps=ints,
    scale=floats,
    amp=st.booleans(),
    run_dir=texts.filter(lambda t: "\x00" not in t).map(Path),
    limit=st.none() | ints,
    note=st.none() | texts,
    sizes=st.lists(ints, max_size=4),
    labels=st.frozensets(texts, max_size=3),
    color=st.sampled_from(Color),
    level=st.sampled_from(Level),
    choice=ints | texts,
    table=st.dictionaries(texts, floats, max_size=3),
    optim=st.builds(
        Optim,
        lr=floats,
        betas=st.tuples(floats, floats),
        schedule=st.builds(Schedule, warmup=ints, min_lr=floats, kind=st.sampled_from(["cosine", "linear"])),
    ),
)


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tmp_path_factory.mktemp("dump") / "config.toml"


@given(config=configs)
def test_a_dumped_config_loads_back_equal(config, path):
    """Any config, written by dump_toml and read by load_config, equals the original, field by field and type."""
    path.write_text(dump_toml(config), encoding="utf-8")
    loaded = load_config(Config, path)
    assert loaded == config
    assert [type(getattr(loaded, f.name)) for f in dataclasses.fields(Config)] == [
        type(getattr(config, f.name)) for f in dataclasses.fields(Config)
    ]


def test_the_dump_reads_as_a_config_file():
    """Scalars come first, nested dataclasses as [sections], None as a comment, enums by name."""
    text = dump_toml(Config(name='say "hi"\n', limit=None, table={"a b": math.inf}))
    assert text.splitlines()[:6] == [
        'name = "say \\"hi\\"\\n"',
        "steps = 10",
        "scale = 1.0",
        "amp = false",
        'run_dir = "runs"',
        "# limit: none (TOML has no null; reading this file gives the default)",
    ]
    assert 'color = "RED"' in text
    assert 'table = { "a b" = inf }' in text
    assert "derived" not in text  # not settable: init=False
    assert text.endswith('[optim.schedule]\nwarmup = 0\nmin_lr = 0.0\nkind = "cosine"\n')
    assert tomllib.loads(text)["optim"]["betas"] == [0.9, 0.999]


@dataclasses.dataclass
class Strict:
    timeout: float | None = 30.0
    tags: list[str | None] = dataclasses.field(default_factory=list)
    ids: dict = dataclasses.field(default_factory=dict)
    big: int = 0
    obj: object = None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (Strict(big=None), "big is None, which TOML cannot hold, and its default is 0"),
        (Strict(tags=["a", None]), "tags holds None"),
        (Strict(ids={1: "x"}), "ids has the key 1; TOML keys are strings"),
        (Strict(big=2**64), "big = 18446744073709551616 does not fit"),
        (Strict(obj=object()), "obj is a object, which load_config does not read"),
    ],
)
def test_what_toml_cannot_hold_is_refused_naming_the_field(config, message):
    """A value with no TOML form that reads back equal raises ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        dump_toml(config)


def test_none_in_an_optional_field_with_another_default_is_written_as_none(tmp_path):
    """timeout=None (default 30.0) is written "none", and reads back as None, as --timeout=none does."""
    text = dump_toml(Strict(timeout=None))
    assert 'timeout = "none"' in text
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    assert load_config(Strict, path).timeout is None
    assert load_config(Strict, None, ["--timeout=none"]).timeout is None


def test_only_dataclass_instances_are_dumped():
    """A class or a dict raises TypeError."""
    with pytest.raises(TypeError, match="dataclass instance, got type"):
        dump_toml(Config)
    with pytest.raises(TypeError, match="got dict"):
        dump_toml({"a": 1})

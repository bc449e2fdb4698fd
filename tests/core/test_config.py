"""Typed configuration from TOML files and --field=value flags, with errors that name the culprit."""

import dataclasses
import enum
from pathlib import Path
from typing import Literal

import pytest

from trainwright.config import ConfigError, apply_mapping, apply_overrides, format_help, load_config


class Schedule(enum.Enum):
    STEP = "step"
    EPOCH = "epoch"


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclasses.dataclass(frozen=True)
class Config:
    max_epochs: int = 10
    lr: float = 0.1
    fast: bool = False
    name: str = "run"
    run_dir: Path = Path("runs")
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    devices: int | Literal["auto"] = "auto"
    resume: str | None = None
    schedule: Schedule = Schedule.STEP
    layers: list[int] = dataclasses.field(default_factory=lambda: [8, 8], metadata={"help": "hidden sizes"})
    limit: int | None = None
    optim: Optim = dataclasses.field(default_factory=Optim)

    def __post_init__(self):
        if self.max_epochs < 0:
            raise ValueError(f"max_epochs={self.max_epochs} must be >= 0")


@pytest.mark.parametrize(
    ("flag", "field", "expected"),
    [
        ("--max-epochs=3", "max_epochs", 3),
        ("--max_epochs=3", "max_epochs", 3),
        ("--lr=1e-4", "lr", 1e-4),
        ("--lr=2", "lr", 2.0),
        ("--fast", "fast", True),
        ("--fast=false", "fast", False),
        ("--fast=YES", "fast", True),
        ("--name=", "name", ""),
        ("--name=a=b", "name", "a=b"),
        ("--run-dir=/tmp/x", "run_dir", Path("/tmp/x")),
        ("--precision=bf16-mixed", "precision", "bf16-mixed"),
        ("--devices=2", "devices", 2),
        ("--devices=auto", "devices", "auto"),
        ("--resume=last", "resume", "last"),
        ("--resume=none", "resume", None),
        ("--schedule=EPOCH", "schedule", Schedule.EPOCH),
        ("--schedule=epoch", "schedule", Schedule.EPOCH),
        ("--layers=4,5,6", "layers", [4, 5, 6]),
        ("--layers=", "layers", []),
        ("--limit=7", "limit", 7),
        ("--optim.lr=0.5", "optim", Optim(lr=0.5)),
        ("--optim.betas=0.8,0.9", "optim", Optim(betas=(0.8, 0.9))),
    ],
)
def test_flags_convert_to_the_field_type(flag, field, expected):
    """Each flag sets its field, converted to the field's annotated type."""
    config = apply_overrides(Config(), [flag])
    assert getattr(config, field) == expected
    assert type(getattr(config, field)) is type(expected)


def test_later_flags_win_and_the_original_is_untouched():
    """Flags apply in order, and a new config is returned (frozen dataclasses work)."""
    original = Config()
    config = apply_overrides(original, ["--lr=1", "--optim.lr=2", "--lr=3"])
    assert (config.lr, config.optim.lr) == (3.0, 2.0)
    assert original == Config()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--max-epoch=3", "command line: unknown option --max-epoch; did you mean --max-epochs?"),
        ("--optim.lrr=3", "did you mean --optim.lr?"),
        ("--zzz=1", "unknown option --zzz; known: --max-epochs, --lr"),
        ("--max-epochs=three", "command line: --max-epochs='three' is not an integer"),
        ("--max-epochs=1.5", "--max-epochs='1.5' is not an integer"),
        ("--lr=fast", "--lr='fast' is not a number"),
        ("--fast=maybe", "--fast='maybe' is not true or false"),
        ("--precision=fp8", "--precision='fp8' is not one of '32-true', 'bf16-mixed'"),
        ("--devices=many", "--devices='many' is not an integer or one of 'auto'"),
        ("--schedule=daily", "--schedule='daily' is not one of 'STEP', 'EPOCH'"),
        ("--layers=1,x", "--layers='1,x' is not a comma-separated list, each an integer"),
        ("--optim.betas=0.9", "--optim.betas='0.9' is not a comma-separated list of 2: a number, a number"),
        ("--max-epochs", "'--max-epochs' needs a value, as in --max-epochs=<an integer>"),
        ("max-epochs=3", "'max-epochs=3' is not of the form --field=value"),
        ("--optim=3", "--optim is a section; set its fields"),
        ("--lr.x=3", "--lr has no fields"),
        ("--max-epochs=-1", "max_epochs=-1 must be >= 0"),
    ],
)
def test_bad_flags_raise_config_error_naming_the_flag(flag, message):
    """A bad flag is a ConfigError that names it and says what was expected."""
    with pytest.raises(ConfigError) as excinfo:
        apply_overrides(Config(), [flag])
    assert message in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_mapping_values_are_checked_not_coerced():
    """TOML-style values must have the right type; an int is accepted for a float."""
    config = apply_mapping(Config(), {"lr": 1, "optim": {"lr": 2}, "layers": [1, 2], "run_dir": "out"})
    assert config.lr == 1.0
    assert type(config.lr) is float
    assert config.optim == Optim(lr=2.0)
    assert config.run_dir == Path("out")


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"max_epochs": "3"}, "cfg.toml: max_epochs = '3' is not an integer"),
        ({"max_epochs": True}, "max_epochs = True is not an integer"),
        ({"fast": 1}, "fast = 1 is not true or false"),
        ({"lr": "0.1"}, "lr = '0.1' is not a number"),
        ({"max_epoch": 3}, "cfg.toml: unknown key max_epoch; did you mean max_epochs?"),
        ({"optim": {"learning_rate": 1}}, "cfg.toml [optim]: unknown key learning_rate"),
        ({"optim": 3}, "optim = 3 is not a table of Optim fields"),
        ({"layers": [1, "x"]}, "layers = [1, 'x'] is not a list, each an integer"),
        ({"precision": "fp8"}, "precision = 'fp8' is not one of"),
        ({"devices": True}, "devices = True is not an integer or one of 'auto'"),
    ],
)
def test_bad_mapping_values_name_the_key(mapping, message):
    """A wrong key or value type in a file is a ConfigError naming the file, the key and the expectation."""
    with pytest.raises(ConfigError) as excinfo:
        apply_mapping(Config(), mapping, source="cfg.toml")
    assert message in str(excinfo.value)


def test_load_config_layers_defaults_file_and_flags(tmp_path):
    """load_config applies defaults, then the TOML file, then flags."""
    path = tmp_path / "cfg.toml"
    path.write_text("max_epochs = 4\nlr = 0.5\n[optim]\nlr = 0.01\n")
    config = load_config(Config, path, ["--lr=0.25"])
    assert (config.max_epochs, config.lr, config.optim.lr, config.name) == (4, 0.25, 0.01, "run")


def test_load_config_missing_and_malformed_files(tmp_path):
    """A missing file and invalid TOML are ConfigErrors naming the file (and the line for TOML)."""
    with pytest.raises(ConfigError, match=r"config file '.*nope\.toml' does not exist"):
        load_config(Config, tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("max_epochs = 3\nlr = = 2\n")
    with pytest.raises(ConfigError, match=r"config file '.*bad.toml' is not valid TOML: .*line 2"):
        load_config(Config, bad)


def test_required_field_without_default_is_reported():
    """A dataclass field with no default that nothing sets is a ConfigError naming it."""

    @dataclasses.dataclass
    class Needs:
        data_dir: str

    with pytest.raises(
        ConfigError, match=r"Needs\.data_dir has no default; set it in the config file or with --data-dir="
    ):
        load_config(Needs)
    assert load_config(Needs, args=["--data-dir=/x"]).data_dir == "/x"


def test_format_help_lists_every_field():
    """format_help shows each field as a flag with its type, default and help text."""
    text = format_help(Config())
    assert "--max-epochs=<an integer>  (default: 10)" in text
    assert "--layers=<a comma-separated list, each an integer>  (default: [8, 8])  hidden sizes" in text
    assert "--optim.lr=<a number>  (default: 0.001)" in text
    assert "--run-dir=<a path>  (default: 'runs')" in text

"""Flag resolution, driven from a table with an injected hardware description."""

import re

import pytest

from trainwright.flags import STRATEGIES, Flags, Hardware, resolve_flags
from trainwright.strategies import STRATEGY_CLASSES, DDPStrategy, FSDPStrategy, SingleDeviceStrategy, Strategy

CPU_ONLY = Hardware()
ONE_GPU = Hardware(cuda_devices=1, cuda_bf16=True)
TWO_OLD_GPUS = Hardware(cuda_devices=2, cuda_bf16=False)
FOUR_GPUS = Hardware(cuda_devices=4, cuda_bf16=True)
MAC = Hardware(mps=True)
TORCHRUN = Hardware(world_size=4)


@pytest.mark.parametrize(
    ("flags", "hardware", "expected"),
    [
        ({}, CPU_ONLY, Flags("cpu", (0,), "single", "32-true")),
        ({}, ONE_GPU, Flags("cuda", (0,), "single", "32-true")),
        ({}, MAC, Flags("mps", (0,), "single", "32-true")),
        ({}, Hardware(cuda_devices=1, mps=True), Flags("cuda", (0,), "single", "32-true")),
        ({"accelerator": "cpu"}, FOUR_GPUS, Flags("cpu", (0,), "single", "32-true")),
        ({"devices": [2]}, FOUR_GPUS, Flags("cuda", (2,), "single", "32-true")),
        ({"devices": "3"}, FOUR_GPUS, Flags("cuda", (0, 1, 2), "ddp", "32-true")),
        ({"devices": "1,3"}, FOUR_GPUS, Flags("cuda", (1, 3), "ddp", "32-true")),
        ({"devices": -1}, FOUR_GPUS, Flags("cuda", (0, 1, 2, 3), "ddp", "32-true")),
        ({"devices": 2, "accelerator": "cpu"}, CPU_ONLY, Flags("cpu", (0, 1), "ddp", "32-true")),
        ({}, TORCHRUN, Flags("cpu", (0,), "ddp", "32-true")),
        ({"strategy": "single"}, FOUR_GPUS, Flags("cuda", (0,), "single", "32-true")),
        ({"precision": "bf16-mixed"}, CPU_ONLY, Flags("cpu", (0,), "single", "bf16-mixed")),
        ({"precision": "bf16-mixed"}, ONE_GPU, Flags("cuda", (0,), "single", "bf16-mixed")),
        ({"precision": "16-mixed"}, TWO_OLD_GPUS, Flags("cuda", (0,), "single", "16-mixed")),
        ({"precision": "64-true"}, CPU_ONLY, Flags("cpu", (0,), "single", "64-true")),
        ({"precision": "bf16-true", "accelerator": "cuda"}, ONE_GPU, Flags("cuda", (0,), "single", "bf16-true")),
        ({"strategy": "fsdp"}, CPU_ONLY, Flags("cpu", (0,), "fsdp", "32-true")),
        ({"strategy": "fsdp", "devices": 4}, FOUR_GPUS, Flags("cuda", (0, 1, 2, 3), "fsdp", "32-true")),
        ({"strategy": "fsdp", "precision": "bf16-mixed"}, TORCHRUN, Flags("cpu", (0,), "fsdp", "bf16-mixed")),
        ({"strategy": FSDPStrategy(state_dict_type="full")}, TORCHRUN, Flags("cpu", (0,), "fsdp", "32-true")),
        ({"strategy": DDPStrategy(find_unused_parameters=True)}, FOUR_GPUS, Flags("cuda", (0,), "ddp", "32-true")),
        ({"strategy": DDPStrategy(), "devices": -1}, FOUR_GPUS, Flags("cuda", (0, 1, 2, 3), "ddp", "32-true")),
        ({"strategy": SingleDeviceStrategy()}, MAC, Flags("mps", (0,), "single", "32-true")),
    ],
)
def test_resolution(flags, hardware, expected):
    """Valid flags resolve to concrete accelerator, devices, strategy and precision."""
    assert resolve_flags(**flags, hardware=hardware) == expected


@pytest.mark.parametrize(
    ("flags", "hardware", "message"),
    [
        (
            {"accelerator": "cuda"},
            CPU_ONLY,
            "accelerator='cuda' was requested, but no CUDA device is available; available: 'cpu'",
        ),
        ({"accelerator": "cuda"}, MAC, "no CUDA device is available; available: 'cpu', 'mps'"),
        ({"accelerator": "mps"}, ONE_GPU, "accelerator='mps' was requested, but MPS is not available"),
        ({"accelerator": "gpu"}, ONE_GPU, "accelerator='gpu' is not one of 'auto', 'cpu', 'cuda', 'mps'"),
        (
            {"precision": "fp17"},
            CPU_ONLY,
            "precision='fp17' is not one of '32-true', '64-true', 'bf16-mixed', '16-mixed', 'bf16-true'",
        ),
        ({"precision": 16}, CPU_ONLY, "precision=16 is not one of"),
        (
            {"strategy": "deepspeed"},
            CPU_ONLY,
            "strategy='deepspeed' is not one of 'auto', 'single', 'ddp', 'fsdp', or a Strategy instance",
        ),
        ({"strategy": None}, CPU_ONLY, "strategy=None is not one of 'auto', 'single', 'ddp', 'fsdp'"),
        (
            {"strategy": DDPStrategy},
            CPU_ONLY,
            "strategy=DDPStrategy is a class; pass an instance, e.g. strategy=DDPStrategy()",
        ),
        (
            {"strategy": SingleDeviceStrategy(), "devices": 2},
            FOUR_GPUS,
            "strategy='single' runs on one device, but devices=2 selects 2; use one of 'ddp', 'fsdp', or devices=1",
        ),
        ({"strategy": "fsdp"}, MAC, "strategy='fsdp' is not supported on mps, which has a single device"),
        ({"strategy": DDPStrategy()}, MAC, "strategy='ddp' is not supported on mps"),
        ({"devices": 0}, CPU_ONLY, "devices=0 must be a positive count"),
        ({"devices": -2}, CPU_ONLY, "devices=-2 must be a positive count"),
        ({"devices": "many"}, CPU_ONLY, "devices='many' is not 'auto', a count"),
        ({"devices": True}, CPU_ONLY, "devices=True is not 'auto'"),
        ({"devices": [0, 0]}, FOUR_GPUS, "must list distinct, non-negative device indices"),
        ({"devices": [5]}, FOUR_GPUS, "devices=[5] asks for cuda:5, but only cuda:0..cuda:3 are available"),
        ({"devices": 8}, FOUR_GPUS, "devices=8 asks for 8 cuda devices, but 4 are available"),
        ({"devices": [0], "accelerator": "cpu"}, CPU_ONLY, "on cpu, devices is a process count"),
        ({"devices": 2, "strategy": "single"}, FOUR_GPUS, "strategy='single' runs on one device"),
        ({"precision": "bf16-mixed"}, TWO_OLD_GPUS, "precision='bf16-mixed' needs bfloat16 support"),
        ({"precision": "64-true"}, MAC, "precision='64-true' is not supported on mps"),
        (
            {"strategy": "single"},
            TORCHRUN,
            "strategy='single' runs one process, but this job was launched with WORLD_SIZE=4 processes",
        ),
        ({"strategy": SingleDeviceStrategy()}, TORCHRUN, "use strategy='auto' or one of 'ddp', 'fsdp'"),
        ({"strategy": "single", "accelerator": "cuda"}, Hardware(cuda_devices=1, world_size=2), "WORLD_SIZE=2"),
        ({"strategy": "single", "devices": [1]}, Hardware(cuda_devices=2, world_size=2), "WORLD_SIZE=2"),
    ],
)
def test_errors_name_the_flag_and_the_alternatives(flags, hardware, message):
    """Bad or unsatisfiable flags raise ValueError naming the flag and what would be valid."""
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_flags(**flags, hardware=hardware)


def test_probe_reads_world_size_from_environment():
    """The probe reads WORLD_SIZE from the environment it is given, and rejects a non-integer."""
    from trainwright.flags import probe_hardware

    assert probe_hardware({"WORLD_SIZE": "3"}).world_size == 3
    assert probe_hardware({}).world_size == 1
    with pytest.raises(ValueError, match="WORLD_SIZE='x' is not an integer"):
        probe_hardware({"WORLD_SIZE": "x"})


def test_the_registry_is_the_one_list_of_strategy_names():
    """The flag's allowed names are 'auto' plus the registry's keys, each the name of its class."""
    assert ("auto", *STRATEGY_CLASSES) == STRATEGIES
    assert all(cls.name == name for name, cls in STRATEGY_CLASSES.items())
    assert set(STRATEGY_CLASSES) == {"single", "ddp", "fsdp"}


def test_a_custom_strategy_instance_resolves_by_its_capabilities():
    """A strategy outside the registry counts as its own name, and its class decides what it may span."""

    class Pipeline(Strategy):
        name = "pipeline"
        distributed = True

        @classmethod
        def check_flags(cls, accelerator, precision):
            if precision != "bf16-true":
                raise ValueError(f"strategy='pipeline' needs precision='bf16-true', not {precision!r}")

    flags = resolve_flags("cuda", 2, Pipeline(), "bf16-true", hardware=FOUR_GPUS)
    assert flags == Flags("cuda", (0, 1), "pipeline", "bf16-true")
    with pytest.raises(ValueError, match="needs precision='bf16-true', not '32-true'"):
        resolve_flags("cuda", 2, Pipeline(), hardware=FOUR_GPUS)

"""The language-model task on one CUDA GPU: the generated ``Trainer`` against a nanoGPT-style loop, in tokens/s.

The comparison of ``lm_throughput`` (read its docstring), on the GPU in ``bf16-mixed``: the
trainer through ``Fabric(precision="bf16-mixed")``, the raw loop under
``torch.autocast("cuda", dtype=torch.bfloat16)``, both with fused AdamW and TF32 matmuls
(``matmul_precision="high"``), the trainer's defaults on CUDA. The model is the size of
nanoGPT's character-level Shakespeare example: 6 layers, 6 heads, width 384, a context of 256,
batches of 64. Batches come from the project's loader (pinned memory, as on CUDA by default)
and are copied to the GPU on both sides. Each timed call ends in ``torch.cuda.synchronize()``,
so a variant is charged for the GPU work it queued.

Without a CUDA device, ``run`` returns nothing and the report says so.
"""

from __future__ import annotations

import torch
from lm_throughput import Measured, Setup, measure
from lm_throughput import report as cpu_report

PACKAGE = "bench_language_model_cuda"

CUDA = Setup(
    accelerator="cuda",
    precision="bf16-mixed",
    model={"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256},
    batch_size=64,
)


def run(number: int = 10, rounds: int = 31) -> Measured | None:
    if not torch.cuda.is_available():
        return None
    return measure(PACKAGE, CUDA, number, rounds)


def report(measured: Measured | None) -> str:
    if measured is None:
        return "Not measured: no CUDA device was available when this report was made."
    return f"On {torch.cuda.get_device_name(0)}: " + cpu_report(measured)

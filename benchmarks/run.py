"""Run every benchmark side by side and print one report; ``--update-docs`` also writes it into
docs/performance.md between its result markers. ``make bench`` runs this with Lightning installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import date
from pathlib import Path

import call_overhead
import copier_copy
import cuda_autocast
import cuda_lm_throughput
import ddp_overhead
import fsdp_memory
import host_syncs
import import_time
import lm_throughput
import logger_overhead
import loop_overhead
import torch
import trainer_overhead

import trainwright

DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
START, END = "<!-- benchmark results: start -->", "<!-- benchmark results: end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lightning = "not installed"
    try:
        import lightning

        lightning = lightning.__version__
    except ImportError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores visible; Python {platform.python_version()}, torch {torch.__version__}, "
        f"trainwright {trainwright.__version__}, Lightning {lightning}; {date.today().isoformat()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-docs", action="store_true", help=f"write the report into {DOCS}")
    args = parser.parse_args()
    sections = []
    for title, module in [
        ("`fabric.call`: 3 callbacks with different signatures, 1 without the hook, 4 kwargs", call_overhead),
        ("Training step: tiny MLP, SGD, CPU, 1 thread", loop_overhead),
        ("Generated `Trainer` step: the same tiny MLP, default callbacks, CSV logger", trainer_overhead),
        ("Language model on the CPU: the generated `Trainer` against a nanoGPT-style loop", lm_throughput),
        ("Language model on one CUDA GPU: the generated `Trainer` against a nanoGPT-style loop", cuda_lm_throughput),
        ("Host-device syncs per 100 steps of the generated project", host_syncs),
        ("Loggers: the same tiny MLP through `Fabric`, logging every 10 steps", logger_overhead),
        ("DDP on the CPU: 2 processes over gloo, MLP of 0.4 M parameters, SGD, 1 thread each", ddp_overhead),
        ("FSDP against DDP on the CPU: 2 processes over gloo, 8.7 M parameters, AdamW, 1 thread each", fsdp_memory),
        ("bf16-mixed on one CUDA GPU: MLP of 50 M parameters, AdamW", cuda_autocast),
        ("Import time", import_time),
        ("Scaffolding a project", copier_copy),
    ]:
        print(f"running {module.__name__} ...", file=sys.stderr, flush=True)
        sections.append(f"### {title}\n\n{module.report(module.run())}")
    report = f"Measured on: {machine()}.\n\n" + "\n\n".join(sections)
    print(report)
    if args.update_docs:
        text = DOCS.read_text()
        if START not in text or END not in text:
            raise SystemExit(f"{DOCS} lacks the markers {START} and {END}")
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        DOCS.write_text(f"{head}{START}\n{report}\n{END}{tail}")
        print(f"updated {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The command line.

    python -m <package> fit [--config FILE] [--field=value ...]   train; --help lists every field
    python -m <package> plot RUN_DIR [--output FILE]               draw a run's metrics to a PNG

A mistake in the command line, the config, the resume checkpoint or a callback's signature ends
the run with one message and exit code 2, before anything is written. A loss that turns NaN
ends it with one message and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainwright import HookSignatureError
from trainwright.config import ConfigError, format_help, load_config

from .config import Config


def main(argv: list[str] | None = None) -> int:
    prog = f"python -m {__package__}"
    parser = argparse.ArgumentParser(prog=prog, description="Train and inspect models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{fit,plot}")
    fit_parser = commands.add_parser(
        "fit",
        help="train a model",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a model. Settings come from the defaults, then --config, then --field=value flags.",
        epilog="fields:\n" + format_help(Config()),
    )
    fit_parser.add_argument("--config", type=Path, metavar="FILE", help="a TOML file of settings")
    plot_parser = commands.add_parser("plot", help="draw a run's loss, learning rate and iteration time")
    plot_parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory holding metrics.csv")
    plot_parser.add_argument(
        "--output", type=Path, metavar="FILE", help="the PNG to write (default RUN_DIR/metrics.png)"
    )
    args, overrides = parser.parse_known_args(argv)
    if args.command == "plot":
        if overrides:
            parser.error(f"unrecognized arguments: {' '.join(overrides)}")
        from .plot import plot

        try:
            output = plot(args.run_dir, args.output)
        except (FileNotFoundError, ImportError, ValueError) as error:
            print(f"{prog} plot: error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {output}")
        return 0
    from .fit import fit
    from .trainer import NonFiniteLossError

    try:
        trainer = fit(load_config(Config, args.config, overrides))
    except (ConfigError, HookSignatureError) as error:  # the input or a callback is wrong: nothing was written
        print(f"{prog} fit: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:  # the run diverged; the checkpoints written so far are intact
        print(f"{prog} fit: error: {error}", file=sys.stderr)
        return 1
    config = trainer.config
    outputs = {"metrics": config.run_dir / "metrics.csv", "checkpoint": config.run_dir / "checkpoints" / "last.ckpt"}
    outputs["profiler"] = config.run_dir / "profiler" / "trace.json"
    trainer.fabric.print("\n".join(f"{name:>10}: {path}" for name, path in outputs.items() if path.exists()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

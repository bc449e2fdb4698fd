"""One rank of the two-process tracker test; ``torchrun`` starts two copies of it.

    python -m torch.distributed.run --standalone --nproc-per-node=2 tracker_worker.py OUT_DIR

Every rank builds an MLflow and a W&B logger of its own folder and logs through ``Fabric``, as
a user's script does; each writes which tracker packages it imported to OUT_DIR/rank<r>.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from trainwright import Fabric, MLflowLogger, WandbLogger


def main(out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    mlflow = MLflowLogger(out_dir / f"mlflow-{rank}", experiment_name="ddp")
    wandb = WandbLogger(out_dir / f"wandb-{rank}", project="ddp")
    with Fabric(accelerator="cpu", loggers=[mlflow, wandb]) as fabric:
        fabric.log_hyperparams({"world_size": fabric.world_size})
        for step in range(3):
            loss = fabric.all_reduce(torch.tensor(float(step + rank)))  # (0+1)/2, (1+2)/2, (2+3)/2
            fabric.log("loss", loss, step=step)
        fabric.save(out_dir / "last.ckpt", {"loggers": {"mlflow": mlflow.state_dict(), "wandb": wandb.state_dict()}})
        imported = sorted({name.split(".")[0] for name in sys.modules} & {"mlflow", "wandb"})
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"imported": imported}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

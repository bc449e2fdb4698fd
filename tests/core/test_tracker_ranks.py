"""Under DDP only global rank zero starts an MLflow or W&B run: two real processes over gloo."""

import json
import os
import sys
from pathlib import Path

import pytest

from tests.core import tracker_worker
from tests.core.helpers import dev_dependency
from tests.core.test_ddp import run_bounded
from tests.core.wandb_records import offline_runs, read_run
from trainwright.checkpoint import CheckpointIO

dev_dependency("mlflow")
dev_dependency("wandb")


@pytest.mark.slow
def test_only_rank_zero_starts_a_tracker_run(tmp_path):
    """Rank 1 imports no tracker and creates no store; rank 0 has one finished run in each, ids in the checkpoint."""
    from mlflow.tracking import MlflowClient

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_ERROR_REPORTING": "false"}
    env |= {name: str(tmp_path / name.lower()) for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    result = run_bounded([*command, str(Path(tracker_worker.__file__)), str(tmp_path)], timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks == [{"imported": ["mlflow", "wandb"]}, {"imported": []}]
    assert not (tmp_path / "mlflow-1").exists()
    assert not (tmp_path / "wandb-1").exists()

    saved = CheckpointIO().load(tmp_path / "last.ckpt")["loggers"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow-0' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    # The checkpoint was taken right after logging, maybe before the store had created the run:
    # it names the run by the key that the run is tagged with, and by its id once it had one.
    assert (run.data.tags["trainwright_run_key"], run.info.status) == (saved["mlflow"]["run_key"], "FINISHED")
    assert saved["mlflow"].get("run_id", run.info.run_id) == run.info.run_id
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [
        (0, 0.5),
        (1, 1.5),
        (2, 2.5),
    ]
    (wandb_run,) = [read_run(run_dir) for run_dir in offline_runs(tmp_path / "wandb-0")]
    assert (wandb_run.run_id, wandb_run.exit_code) == (saved["wandb"]["run_id"], 0)
    assert [row["loss"] for row in wandb_run.history] == [0.5, 1.5, 2.5]

"""The DDP strategy: the launch environment, sharding, and two real processes over gloo.

The two-process tests start ``torchrun --standalone --nproc-per-node=2`` on ``ddp_worker.py``
and read what each rank wrote. Every subprocess has a timeout, so a hang fails the test
instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from tests.core import ddp_worker
from trainwright import Fabric
from trainwright.checkpoint import CheckpointIO
from trainwright.strategies import DDPStrategy, LaunchEnvironment, ShardedSampler, shard_dataloader

WORKER = Path(ddp_worker.__file__)
TORCHRUN_TIMEOUT = 120


def run_bounded(command: list[str], timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run torchrun's ``command``; past ``timeout``, stop it and its workers, then raise ``TimeoutExpired``.

    ``subprocess.run`` would SIGKILL torchrun alone and leave its workers running (and holding
    the output pipes open). SIGTERM lets torchrun stop its workers first.
    """
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.communicate(timeout=30)
            finally:
                with contextlib.suppress(ProcessLookupError):  # the group may have ended already
                    os.killpg(process.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def torchrun(*args: str | Path, timeout: float = TORCHRUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``ddp_worker.py`` in two processes; the environment carries no launch variables in."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", WORKER, *args]
    return run_bounded([str(part) for part in command], timeout, env)


# -- the launch environment -----------------------------------------------------------------

TORCHRUN_ENV = {
    "RANK": "3",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "4",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "node0",
    "MASTER_PORT": "29500",
}


def test_environment_reads_what_torchrun_sets():
    env = LaunchEnvironment.from_environ(TORCHRUN_ENV)
    assert env == LaunchEnvironment(3, 1, 4, 2, "node0", 29500)
    assert env.launched


def test_environment_without_a_launcher_is_one_process():
    env = LaunchEnvironment.from_environ({"PATH": "/bin"})
    assert (env.rank, env.local_rank, env.world_size, env.launched) == (0, 0, 1, False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"MASTER_PORT": None}, "WORLD_SIZE is set, but MASTER_PORT is not: start the job with torchrun"),
        ({"RANK": None, "LOCAL_RANK": None}, "WORLD_SIZE is set, but RANK, LOCAL_RANK are not"),
        ({"RANK": "two"}, "environment variable RANK='two' is not an integer"),
        ({"RANK": "4"}, "RANK=4 does not fit WORLD_SIZE=4"),
        ({"LOCAL_RANK": "2"}, "LOCAL_RANK=2 does not fit LOCAL_WORLD_SIZE=2"),
    ],
)
def test_environment_errors_name_the_variable(changes, message):
    environ = {k: v for k, v in {**TORCHRUN_ENV, **changes}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        LaunchEnvironment.from_environ(environ)


def test_several_devices_without_a_launcher_say_how_to_launch():
    with pytest.raises(ValueError, match=r"needs one process per device; start them with `torchrun --nproc-per-node=2"):
        Fabric(accelerator="cpu", devices=2)


def test_ddp_on_mps_is_refused():
    from trainwright.flags import Hardware, resolve_flags

    with pytest.raises(ValueError, match="strategy='ddp' is not supported on mps"):
        resolve_flags("mps", strategy="ddp", hardware=Hardware(mps=True))


# -- sharding -----------------------------------------------------------------------------------


class Reversed(torch.utils.data.Sampler[int]):
    """A custom sampler with an epoch: indices in reverse, rotated by the epoch."""

    def __init__(self, size: int) -> None:
        self.size, self.epoch = size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = list(reversed(range(self.size)))
        return iter(order[self.epoch :] + order[: self.epoch])

    def __len__(self) -> int:
        return self.size


@pytest.mark.parametrize("size", [1, 2, 7, 10])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_sharded_sampler_deals_every_index_evenly(size, replicas):
    """Shards are equally long, together hold every index, and overlap only by the padding."""
    shards = [list(ShardedSampler(Reversed(size), replicas, rank)) for rank in range(replicas)]
    assert {len(shard) for shard in shards} == {-(-size // replicas)}
    dealt = [index for shard in shards for index in shard]
    assert set(dealt) == set(range(size))
    # The padding repeats the wrapped order from its start; rank r takes positions r, r + n, ...
    order = list(Reversed(size))
    assert Counter(dealt) - Counter(order) == Counter((order * replicas)[: len(dealt) - size])
    assert shards[0][0] == order[0]
    if size >= replicas:
        assert [shard[0] for shard in shards] == order[:replicas]


def test_sharded_sampler_passes_set_epoch_on():
    sampler = ShardedSampler(Reversed(6), 2, 1)
    before = list(sampler)
    sampler.set_epoch(1)
    assert sampler.sampler.epoch == 1
    assert list(sampler) != before


def test_sharded_sampler_rejects_a_rank_outside_the_job():
    with pytest.raises(ValueError, match="rank=2 does not fit num_replicas=2"):
        ShardedSampler(Reversed(4), 2, 2)


def dataset(n: int = 10) -> TensorDataset:
    return TensorDataset(torch.arange(n))


def test_loader_in_order_gets_an_unshuffled_distributed_sampler():
    original = DataLoader(dataset(), batch_size=2, drop_last=True, collate_fn=lambda b: b)
    sharded = shard_dataloader(original, 2, 1, seed=0)
    assert isinstance(sharded.sampler, DistributedSampler)
    assert not sharded.sampler.shuffle
    assert (sharded.batch_size, sharded.drop_last, sharded.collate_fn) == (2, True, original.collate_fn)
    assert [int(x) for batch in sharded for (x,) in batch] == [1, 3, 5, 7]


def test_shuffling_loader_gets_a_seeded_shuffling_sampler():
    sharded = [shard_dataloader(DataLoader(dataset(), shuffle=True), 2, rank, seed=7) for rank in (0, 1)]
    assert all(isinstance(s.sampler, DistributedSampler) and s.sampler.seed == 7 for s in sharded)
    first, second = ([int(x) for (x,) in s] for s in sharded)
    assert sorted(first + second) == list(range(10))
    assert first + second != list(range(10))  # shuffled


def test_custom_sampler_is_wrapped_and_explicit_batch_sampler_is_read():
    sharded = shard_dataloader(DataLoader(dataset(6), sampler=Reversed(6), batch_size=3), 2, 0, seed=0)
    assert isinstance(sharded.sampler, ShardedSampler)
    assert [x.tolist() for (x,) in sharded] == [[5, 3, 1]]
    explicit = DataLoader(dataset(6), batch_sampler=BatchSampler(Reversed(6), 3, drop_last=False))
    sharded = shard_dataloader(explicit, 2, 1, seed=0)
    assert isinstance(sharded.sampler, ShardedSampler)
    assert [x.tolist() for (x,) in sharded] == [[4, 2, 0]]


def dealt(loader: DataLoader) -> list[int]:
    return [int(x) for (batch,) in loader for x in batch]


@pytest.mark.parametrize("size", [1, 2, 7, 10])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
@pytest.mark.parametrize("sampling", ["in order", "shuffled", "custom"])
def test_evaluation_shards_hold_every_sample_exactly_once(size, replicas, sampling):
    """Unpadded shards together hold every index exactly once, and differ in length by at most one."""

    def loader() -> DataLoader:
        if sampling == "custom":
            return DataLoader(dataset(size), batch_size=3, sampler=Reversed(size))
        return DataLoader(dataset(size), batch_size=3, shuffle=sampling == "shuffled")

    sharded = [shard_dataloader(loader(), replicas, rank, seed=5, pad=False) for rank in range(replicas)]
    shards = [dealt(s) for s in sharded]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(s.sampler) for s in sharded] == list(map(len, shards))
    assert [len(s) for s in sharded] == [-(-len(shard) // 3) for shard in shards]


def test_shuffled_evaluation_shards_follow_the_seed_and_the_epoch():
    """A shuffled evaluation loader deals DistributedSampler's order for (seed, epoch), unpadded, on every rank."""
    for epoch in (0, 3):
        shards = []
        for rank in (0, 1):
            sharded = shard_dataloader(DataLoader(dataset(7), shuffle=True), 2, rank, seed=5, pad=False)
            sharded.sampler.set_epoch(epoch)
            shards.append(dealt(sharded))
        order = torch.randperm(7, generator=torch.Generator().manual_seed(5 + epoch)).tolist()
        assert shards == [order[0::2], order[1::2]]


def test_training_shards_pad_and_evaluation_shards_do_not():
    """With 7 samples on 2 processes, training deals 8 (one twice), evaluation deals 7."""
    for pad, total in ((True, 8), (False, 7)):
        shards = [dealt(shard_dataloader(DataLoader(dataset(7)), 2, rank, seed=0, pad=pad)) for rank in (0, 1)]
        assert sum(map(len, shards)) == total
        assert set(shards[0] + shards[1]) == set(range(7))


def test_loaders_that_shard_themselves_are_left_alone():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(3))

    stream = DataLoader(Stream())
    assert shard_dataloader(stream, 2, 0, seed=0) is stream
    already = DataLoader(dataset(), sampler=DistributedSampler(dataset(), 2, 0))
    assert shard_dataloader(already, 2, 0, seed=0) is already


def test_loaders_that_cannot_be_rebuilt_are_refused():
    class MyLoader(DataLoader):
        pass

    class Pairs(BatchSampler):
        pass

    with pytest.raises(
        TypeError, match=r"cannot rebuild a .*MyLoader with a sharded sampler; .*use_distributed_sampler"
    ):
        shard_dataloader(MyLoader(dataset()), 2, 0, seed=0)
    custom = DataLoader(dataset(), batch_sampler=Pairs(SequentialSampler(range(10)), 2, False))
    with pytest.raises(TypeError, match=r"cannot shard the custom batch sampler .*Pairs"):
        shard_dataloader(custom, 2, 0, seed=0)


def test_random_sampler_with_replacement_is_sharded_as_drawn():
    loader = DataLoader(dataset(), sampler=RandomSampler(dataset(), replacement=True, num_samples=4))
    assert isinstance(shard_dataloader(loader, 2, 0, seed=0).sampler, ShardedSampler)


# -- one process through the DDP code path ----------------------------------------------------


def test_single_process_ddp_wraps_the_model_and_tears_the_group_down():
    """strategy='ddp' without a launcher: a group of one, a DDP-wrapped model, a sharded loader."""
    with Fabric(accelerator="cpu", strategy="ddp") as fabric:
        assert isinstance(fabric.strategy, DDPStrategy)
        assert dist.is_initialized()
        assert (fabric.global_rank, fabric.world_size) == (0, 1)
        model = fabric.setup(torch.nn.Linear(2, 1))
        assert isinstance(model._forward_module, torch.nn.parallel.DistributedDataParallel)
        assert list(model.state_dict()) == ["weight", "bias"]  # no "module." prefix in checkpoints
        loader = fabric.setup_dataloaders(DataLoader(dataset(4)))
        assert isinstance(loader.sampler, DistributedSampler)
        assert fabric.setup_dataloaders(DataLoader(dataset(4)), use_distributed_sampler=False).sampler.__class__ is (
            SequentialSampler
        )
        assert fabric.all_reduce(torch.tensor([2, 4]), op="mean").tolist() == [2.0, 4.0]
        # DDP's reducer holds the gloo group. Freed after the group is destroyed, it drops the
        # group's last reference with the GIL held, and gloo's destructor, joining its threads,
        # hung there once in CI. Free the model while the group is still registered.
        del model
    assert not dist.is_initialized()


def test_teardown_lets_threads_waiting_for_the_gil_run_while_the_group_is_alive():
    """A thread woken just before teardown gets the GIL before the process group is destroyed.

    gloo's worker threads free a finished collective's tensors after ``wait()`` has returned,
    and take the GIL to do it. A script that ended right after its last collective could reach
    interpreter shutdown while one still waited, and the process aborted (seen in CI, exit -6).
    With a switch interval of a minute, a waiting thread gets the GIL only when this thread
    blocks; teardown must block, before it destroys the group, for such a thread to run.
    """
    woken, seen = threading.Event(), []
    waiting = threading.Thread(target=lambda: woken.wait() and seen.append(dist.is_initialized()))
    waiting.start()
    interval = sys.getswitchinterval()
    try:
        with Fabric(accelerator="cpu", strategy="ddp") as fabric:
            fabric.all_reduce(torch.ones(2), op="sum")
            sys.setswitchinterval(60)
            woken.set()  # the thread now waits for the GIL, as a gloo worker with a tensor to free would
    finally:
        sys.setswitchinterval(interval)
        waiting.join(timeout=30)
    assert seen == [True]  # it ran while the group still existed


def test_the_process_group_is_left_when_the_loop_fails():
    joined = []

    def failing_loop() -> None:
        with Fabric(accelerator="cpu", strategy="ddp"):
            joined.append(dist.is_initialized())
            raise RuntimeError("the loop fails")

    with pytest.raises(RuntimeError, match="the loop fails"):
        failing_loop()
    assert joined == [True]
    assert not dist.is_initialized()


def test_a_process_group_made_elsewhere_is_used_and_kept():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        Fabric(accelerator="cpu", strategy="ddp").teardown()
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_module_without_trainable_parameters_is_not_wrapped():
    with Fabric(accelerator="cpu", strategy="ddp") as fabric:
        frozen = torch.nn.Linear(2, 1).requires_grad_(False)
        assert fabric.setup(frozen)._forward_module is frozen


# -- two processes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run the ``train`` scenario once in two processes; return the output folder and the results."""
    out_dir = tmp_path_factory.mktemp("ddp")
    result = torchrun("train", out_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return out_dir, ranks, result


def test_auto_strategy_is_ddp_under_torchrun(trained):
    _, ranks, _ = trained
    assert [(r["rank"], r["world_size"], r["strategy"]) for r in ranks] == [(0, 2, "ddp"), (1, 2, "ddp")]


def test_collectives_across_processes(trained):
    _, ranks, _ = trained
    for r in ranks:
        assert (r["sum"], r["mean"], r["max"], r["min"]) == (3.0, 1.5, 2.0, 1.0)
        assert r["input_untouched"]
        assert r["gathered"] == [[0, 0], [1, 10]]
        assert r["broadcast"] == {"from": 1}


def test_each_rank_reads_its_own_shard(trained):
    _, ranks, _ = trained
    features = ddp_worker.data().tensors[0][:, 0].tolist()
    first, second = (r["first_features"] for r in ranks)
    assert first == features[0::2]
    assert second == features[1::2]
    assert ranks[0]["batches"] == ranks[1]["batches"] == 64 // 2 // ddp_worker.PER_RANK_BATCH


def test_ddp_matches_one_process_with_the_global_batch(trained):
    """Per-rank batch B on 2 processes ends with the weights of 1 process with batch 2B (to 1e-5)."""
    _, ranks, _ = trained
    net = ddp_worker.model()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for x, y in DataLoader(ddp_worker.data(), batch_size=2 * ddp_worker.PER_RANK_BATCH):
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    expected = [p.detach().flatten() for p in net.parameters()]
    for r in ranks:
        for got, want in zip(r["weights"], expected, strict=True):
            torch.testing.assert_close(torch.tensor(got), want, atol=1e-5, rtol=0)
    # And the run really trained: the weights moved from their initial values.
    initial = [p.detach().flatten() for p in ddp_worker.model().parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(expected, initial, strict=True))


def test_only_rank_zero_logs_saves_and_prints(trained):
    out_dir, _, result = trained
    assert not (out_dir / "logs-1").exists()
    assert not (out_dir / "checkpoints-1").exists()
    rows = (out_dir / "logs-0" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss"
    assert len(rows) == 1 + 4
    checkpoint = CheckpointIO().load(out_dir / "checkpoints-0" / "final.ckpt")
    assert checkpoint["rank"] == 0
    assert set(checkpoint["model"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert "printed by rank 0" in result.stdout
    assert "printed by rank 1" not in result.stdout


@pytest.fixture(scope="module")
def reliability(tmp_path_factory):
    """Run the ``reliability`` scenario once in two processes; return a function reading a check's per-rank results."""
    out_dir = tmp_path_factory.mktemp("reliability")
    result = torchrun("reliability", out_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return lambda check: [json.loads((out_dir / f"{check}-rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_each_rank_has_its_own_random_streams_and_restores_its_own(reliability):
    """Under 2 gloo processes: distinct seeds and dropout masks, one shuffle, and an exact per-rank RNG restore."""
    ranks = reliability("rng")
    first, second = ranks
    assert (first["seed"], first["initial_seed"]) == (1234, 1234)  # rank 0: exactly a plain seed_everything(1234)
    assert second["seed"] == second["initial_seed"] != 1234
    assert first["weights"] == second["weights"]  # DDP gave both rank 0's initial weights
    assert first["dropped"] != second["dropped"]
    for rank in ranks:
        assert 16 < sum(rank["dropped"]) < 48  # dropout with p=0.5 of 64 units really dropped some
    # The shuffle is a function of the seed and the epoch alone: DistributedSampler's, for rank 0's seed.
    assert first["sampler_seed"] == second["sampler_seed"] == 1234
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1234 + 1)).tolist()
    assert (first["shard"], second["shard"]) == (order[0::2], order[1::2])
    # Every rank's state went into the one checkpoint, and each rank drew its own numbers again.
    for rank in ranks:
        assert rank["saved_states"] == 2
        assert rank["after"] == rank["before"]
    for generator in first["before"]:
        assert first["before"][generator] != second["before"][generator], generator
    assert ("cuda" in first["before"]) == torch.cuda.is_available()


@pytest.mark.slow
def test_evaluation_loaders_give_the_exact_mean_on_two_processes(reliability):
    """9 samples on 2 processes (5 + 4: 3 and 2 batches, padded to 3): each is seen once; the mean is exact."""
    ranks = reliability("evaluate")
    first, second = ranks
    assert sorted(first["seen"] + second["seen"]) == list(range(ddp_worker.EVAL_SIZE))
    assert (len(first["seen"]), len(second["seen"])) == (5, 4)
    # Both ranks run 3 forward passes (a collective in each would otherwise hang); rank 1's third is padding.
    assert (first["batches"], second["batches"]) == (3, 3)
    assert (first["padding"], second["padding"]) == (0, 1)
    # The reference: the same model (equal on both ranks) over the whole set in one process.
    net = ddp_worker.eval_model()
    net.load_state_dict({k: torch.tensor(v) for k, v in first["state"].items()})
    assert first["state"] == second["state"]
    net.eval()
    with torch.no_grad():
        x, y, _ = ddp_worker.eval_data().tensors
        expected = torch.nn.functional.mse_loss(net(x), y).item()
    for rank in ranks:
        assert rank["count"] == ddp_worker.EVAL_SIZE
        assert rank["mean_index"] == (ddp_worker.EVAL_SIZE - 1) / 2
        assert rank["mean_loss"] == pytest.approx(expected, rel=1e-6)
        assert rank["padded_count"] == ddp_worker.EVAL_SIZE + 1  # what a training loader would have counted


@pytest.mark.slow
def test_uneven_streams_and_an_empty_shard_run_equal_batch_counts(reliability):
    """Streams of 3 and 1 batches, and 1 sample on 2 ranks: every rank runs as many batches, padding marked."""
    first, second = reliability("uneven")
    assert first["stream"] == {"real": [0.0, 1.0, 2.0], "padding": 0}
    assert second["stream"] == {"real": [10.0], "padding": 2}
    first_sample = ddp_worker.eval_data().tensors[0][0].tolist()
    assert first["one"] == {"real": first_sample, "padding": 0}
    assert second["one"] == {"real": [], "padding": 1}  # its shard is empty: the data set's first sample pads it


def test_a_failing_rank_ends_the_job_quickly_and_non_zero(tmp_path):
    """Rank 1 raises while rank 0 waits in an all-reduce: the job exits non-zero, nothing hangs."""
    start = time.monotonic()
    result = torchrun("fail", tmp_path, timeout=90)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in result.stderr
    assert elapsed < 60, f"the job took {elapsed:.0f} s to end after a rank failed"


def test_loader_set_epoch_reaches_the_sampler_wherever_it_is():
    """loader.set_epoch passes the epoch to a sampler that takes it, and is harmless otherwise."""
    fabric = Fabric(accelerator="cpu")
    sampler = Reversed(6)
    fabric.setup_dataloaders(DataLoader(dataset(6), sampler=sampler)).set_epoch(2)
    assert sampler.epoch == 2
    inside = Reversed(6)
    fabric.setup_dataloaders(DataLoader(dataset(6), batch_sampler=BatchSampler(inside, 2, False))).set_epoch(3)
    assert inside.epoch == 3
    fabric.setup_dataloaders(DataLoader(dataset(6), shuffle=True)).set_epoch(4)  # RandomSampler: nothing to do

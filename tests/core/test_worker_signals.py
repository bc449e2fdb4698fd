"""DataLoader workers leave the preemption signals that a launcher sends the whole job to the main process."""

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from trainwright import Fabric

pytestmark = pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="needs sigwaitinfo (Linux)")

# The job's main process: it iterates a loader with two workers, says "go" after a few batches,
# waits until both signals have reached it, then reads the rest. Every batch reports whether the
# loader's own worker_init_fn ran in the worker that made it.
SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    from torch.utils.data import DataLoader, Dataset
    from trainwright import Fabric

    CASE = sys.argv[1]
    INITIALISED = False

    def user_worker_init(worker_id):
        global INITIALISED
        INITIALISED = True

    class Slow(Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, index):
            time.sleep(0.005)
            return index, INITIALISED

    received = []
    for number in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(number, lambda number, frame: received.append(signal.Signals(number).name))

    persistent = CASE == "persistent"
    loader = DataLoader(
        Slow(), batch_size=2, num_workers=2, persistent_workers=persistent, worker_init_fn=user_worker_init
    )
    loader = Fabric(accelerator="cpu").setup_dataloaders(loader)
    seen = []
    for epoch in range(2 if persistent else 1):
        if CASE == "skip":
            loader.skip_batches(1)  # the epoch runs on a rebuilt loader
        for i, (indices, initialised) in enumerate(loader):
            seen += indices.tolist()
            assert all(initialised.tolist()), "the loader's own worker_init_fn did not run"
            if epoch == 0 and i == 3:
                print("go", flush=True)
                deadline = time.monotonic() + 30
                while len(received) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
    print("read", len(seen), "received", sorted(received), flush=True)
    KEEP = loader  # persistent workers still alive at exit: the interpreter must still end
    """
)


@pytest.mark.parametrize(("case", "samples_read"), [("plain", 40), ("persistent", 80), ("skip", 38)])
def test_workers_survive_a_signal_to_the_process_group(tmp_path: Path, case: str, samples_read: int):
    """SIGTERM and SIGUSR1 sent to the whole process group reach the main process; its workers keep serving."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    job = subprocess.Popen(
        [sys.executable, str(script), case],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as torchrun and SLURM give a job
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # one compute thread beside the workers, as torchrun sets
    )
    try:
        ready, _, _ = select.select([job.stdout], [], [], 60)
        assert ready, "the job never started reading"
        assert job.stdout.readline().strip() == "go"
        os.killpg(job.pid, signal.SIGTERM)
        os.killpg(job.pid, signal.SIGUSR1)
        output, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
    assert job.returncode == 0, output
    assert f"read {samples_read} received ['SIGTERM', 'SIGUSR1']" in output


@pytest.mark.parametrize("bad", [[signal.SIGKILL], "SIGTERM", [0], [True]])
def test_bad_ignored_signals_are_refused(bad):
    """worker_ignored_signals that are not blockable signals raise ValueError naming the argument."""
    loader = DataLoader(list(range(4)), num_workers=1)
    with pytest.raises(ValueError, match="worker_ignored_signals"):
        Fabric(accelerator="cpu").setup_dataloaders(loader, worker_ignored_signals=bad)


def test_a_sharded_rebuild_keeps_the_workers_signal_handling():
    """The loader rebuilt for a process's shard runs the same worker_init_fn: the signal handling, then the user's."""
    from trainwright.strategies.sharding import shard_dataloader

    def user_worker_init(worker_id):
        pass

    loader = DataLoader(list(range(8)), batch_size=2, num_workers=2, worker_init_fn=user_worker_init)
    wrapped = Fabric(accelerator="cpu").setup_dataloaders(loader).dataloader
    shard = shard_dataloader(wrapped, num_replicas=2, rank=1, seed=0)
    assert shard is not wrapped
    assert shard.worker_init_fn is wrapped.worker_init_fn
    assert shard.worker_init_fn.worker_init_fn is user_worker_init
    assert set(shard.worker_init_fn.signals) == {signal.SIGTERM, signal.SIGUSR1}

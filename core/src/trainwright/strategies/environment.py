"""Where this process sits in a job, as the launcher (``torchrun``) describes it in the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: What ``torchrun`` sets for every worker, and what the DDP strategy reads.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class LaunchEnvironment:
    """One process's place in the job.

    Attributes:
        rank: the process's index in the whole job (``RANK``).
        local_rank: its index on this node (``LOCAL_RANK``), which picks its GPU.
        world_size: processes in the job (``WORLD_SIZE``).
        local_world_size: processes on this node (``LOCAL_WORLD_SIZE``).
        master_addr: host of the rendezvous store (``MASTER_ADDR``); ``None`` without a launcher.
        master_port: its port (``MASTER_PORT``); ``None`` without a launcher.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def launched(self) -> bool:
        """Whether a launcher started this process (and so runs a rendezvous store for it)."""
        return self.master_addr is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> LaunchEnvironment:
        """Read the variables ``torchrun`` sets; without ``WORLD_SIZE``, a job of this process alone.

        Raises:
            ValueError: some launch variables are set and others missing, a value is not an
                integer, or the ranks do not fit the world size. The message names the variables.
        """
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ:
            return cls()
        missing = [name for name in LAUNCH_VARIABLES if not environ.get(name)]
        if missing:
            raise ValueError(
                f"WORLD_SIZE is set, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: "
                "start the job with torchrun, which sets all of "
                f"{', '.join(LAUNCH_VARIABLES)}"
            )
        numbers = {
            name: env_int(environ, name)
            for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "LOCAL_WORLD_SIZE")
            if name in environ
        }
        env = cls(
            rank=numbers["RANK"],
            local_rank=numbers["LOCAL_RANK"],
            world_size=numbers["WORLD_SIZE"],
            local_world_size=numbers.get("LOCAL_WORLD_SIZE", numbers["WORLD_SIZE"]),
            master_addr=environ["MASTER_ADDR"],
            master_port=numbers["MASTER_PORT"],
        )
        if env.world_size < 1 or not 0 <= env.rank < env.world_size:
            raise ValueError(f"RANK={env.rank} does not fit WORLD_SIZE={env.world_size}")
        if not 0 <= env.local_rank < env.local_world_size:
            raise ValueError(f"LOCAL_RANK={env.local_rank} does not fit LOCAL_WORLD_SIZE={env.local_world_size}")
        return env


def env_int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    """The integer in environment variable ``name``, or ``default`` when it is unset.

    Raises:
        ValueError: the variable is set to something that is not an integer (or unset, with no default).
    """
    value = environ.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"environment variable {name} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None

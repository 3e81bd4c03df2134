"""Every device-aware line of the project: sharding batches, replicating state, prefetching.

Data parallelism runs the same per-device step functions (gradients averaged with `lax.pmean`
over the axis `AXIS`) in one of two ways, picked by `config.parallel` (`DataParallel`):

* `'pmap'` (default): `jax.pmap` over the local devices; state replicated with a leading
  device axis, batches reshaped to [local devices, per device, ...].
* `'jit'`: `jax.jit` of the step under `jax.shard_map` over a mesh of every device (one axis,
  `AXIS`); state replicated and batches sharded along that axis with `NamedSharding`, as
  global arrays (`jax.make_array_from_process_local_data`, so several hosts work too). This
  is the path JAX develops (pmap is in maintenance and itself built on shard_map since 0.8).

Both give the same parameters (tests/test_train_steps.py).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

AXIS = "batch"

# Environment variables a multi-process launcher sets to the number of processes it started.
LAUNCHER_PROCESS_COUNTS = ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    enable: bool | None = None,
) -> bool:
    """Starts JAX's multi-process runtime (`jax.distributed.initialize`) when there is one.

    Call it first, before anything touches a device. Values not given come from the environment
    variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID; JAX detects what
    is still missing from SLURM, Open MPI, Kubernetes or Cloud TPU. With `enable=None` the
    runtime starts when any of the three values is set or a launcher started several processes
    (srun: SLURM_STEP_NUM_TASKS > 1, mpirun: OMPI_COMM_WORLD_SIZE > 1); `True` always starts it
    (pure auto-detection), `False` never. Returns whether it started.
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")
    given = (coordinator_address, num_processes, process_id)
    if enable is None:
        launched = any((_env_int(name) or 1) > 1 for name in LAUNCHER_PROCESS_COUNTS)
        enable = launched or any(v is not None for v in given)
    if not enable:
        return False
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"the number of processes must be positive, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is not in [0, {num_processes})")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    return True


def local_batch_size(global_batch_size: int) -> int:
    """This process's share of a global batch; it must split evenly over all devices."""
    if global_batch_size % jax.device_count():
        raise ValueError(
            f"batch size {global_batch_size} is not divisible by the {jax.device_count()} devices"
        )
    return global_batch_size // jax.process_count()


def shard(batch: Any) -> Any:
    """Reshapes host arrays [local_batch, ...] to [local_devices, per_device, ...]."""
    n = jax.local_device_count()
    return jax.tree.map(lambda x: np.asarray(x).reshape((n, -1) + x.shape[1:]), batch)


def _sharding() -> jax.sharding.NamedSharding:
    # The sharding pmap gives its outputs: inputs placed the same way never trigger a second
    # compilation (device_put_sharded / device_put_replicated would).
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def device_put_sharded(tree: Any) -> Any:
    """Places arrays [local_devices, ...] with one slice per local device."""
    sharding = _sharding()
    return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def prefetch(iterator: Iterable[Any], size: int = 2) -> Iterator[Any]:
    """Shards host batches and copies them to the local devices `size` batches ahead (pmap)."""
    return DataParallel("pmap").prefetch(iterator, size)


def replicate(tree: Any) -> Any:
    """Copies a pytree onto every local device (leading axis = local devices)."""
    n = jax.local_device_count()
    return device_put_sharded(
        jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n, *jnp.shape(x))), tree)
    )


def unreplicate(tree: Any) -> Any:
    """Takes the first local device's copy of a replicated pytree (never another host's)."""
    return jax.tree.map(
        lambda x: x.addressable_data(0)[0] if isinstance(x, jax.Array) else x[0], tree
    )


def host_copy(tree: Any) -> Any:
    """The first local copy of a replicated pytree as numpy arrays: what checkpoints store.

    Orbax refuses host-local device arrays when there are several processes; numpy arrays it
    writes from process 0 only, and every process restores them.
    """
    return jax.device_get(unreplicate(tree))


def pmap(fn, *, donate_state: bool = False):
    """`jax.pmap` over the data axis; donating argument 0 (the train state) when asked."""
    return jax.pmap(fn, axis_name=AXIS, donate_argnums=(0,) if donate_state else ())


MODES = ("pmap", "jit")


class DataParallel:
    """The data-parallel path of `mode` ('pmap' or 'jit', see the module docstring).

    A step function `fn(state, batch, *replicated)` sees one device's share of the batch and a
    full copy of the state, and may use collectives over `AXIS`; `compile` returns it run over
    all devices. The other methods place and read back what it takes and returns.
    """

    def __init__(self, mode: str = "pmap"):
        if mode not in MODES:
            raise ValueError(f"parallel must be one of {MODES}, got {mode!r}")
        self.mode = mode
        if mode == "jit":
            P = jax.sharding.PartitionSpec
            self.mesh = jax.sharding.Mesh(np.array(jax.devices()), (AXIS,))
            self._replicated = jax.sharding.NamedSharding(self.mesh, P())
            self._sharded = jax.sharding.NamedSharding(self.mesh, P(AXIS))

    def compile(self, fn, *, donate_state: bool = False, num_replicated: int = 0):
        """`fn(state, batch, *replicated)` over every device: pmap, or jit of shard_map."""
        donate = (0,) if donate_state else ()
        if self.mode == "pmap":
            return jax.pmap(fn, axis_name=AXIS, donate_argnums=donate)
        P = jax.sharding.PartitionSpec
        mapped = jax.shard_map(
            fn,
            mesh=self.mesh,
            in_specs=(P(), P(AXIS), *(P(),) * num_replicated),
            out_specs=P(),  # Outputs are equal on every device (pmean, all_gather).
            check_vma=False,
        )
        return jax.jit(mapped, donate_argnums=donate)

    def _global(self, x, sharding):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = self._global(jax.random.key_data(x), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    def replicate(self, tree: Any) -> Any:
        """A copy of `tree` on every device (the same values on every process)."""
        if self.mode == "pmap":
            return replicate(tree)
        return jax.tree.map(lambda x: self._global(x, self._replicated), tree)

    def unreplicate(self, tree: Any) -> Any:
        """This process's first copy of a replicated tree (state, metrics)."""
        if self.mode == "pmap":
            return unreplicate(tree)
        return jax.tree.map(
            lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree
        )

    def host_copy(self, tree: Any) -> Any:
        """The first local copy of a replicated tree as numpy arrays (what checkpoints store)."""
        return jax.device_get(self.unreplicate(tree))

    def put_batch(self, batch: Any) -> Any:
        """This process's host batch [local_batch, ...] placed for the compiled step."""
        if self.mode == "pmap":
            return device_put_sharded(shard(batch))
        return jax.tree.map(lambda x: self._global(x, self._sharded), batch)

    def prefetch(self, iterator: Iterable[Any], size: int = 2) -> Iterator[Any]:
        """Places host batches on the devices `size` batches ahead."""
        queue = collections.deque()
        for batch in iterator:
            queue.append(self.put_batch(batch))
            if len(queue) > size:
                yield queue.popleft()
        while queue:
            yield queue.popleft()

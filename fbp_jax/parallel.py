"""Every device-aware line of the project: sharding batches, replicating state, prefetching.

Data parallelism is `jax.pmap` over the local devices (gradients averaged with `lax.pmean` over
the axis `AXIS`). Keeping this in one module keeps a move to `jit` + `NamedSharding` small.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np

AXIS = "batch"


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
    """Shards host batches and copies them to the local devices `size` batches ahead."""
    queue = collections.deque()
    for batch in iterator:
        queue.append(device_put_sharded(shard(batch)))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def replicate(tree: Any) -> Any:
    """Copies a pytree onto every local device (leading axis = local devices)."""
    n = jax.local_device_count()
    return device_put_sharded(
        jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n, *jnp.shape(x))), tree)
    )


def unreplicate(tree: Any) -> Any:
    """Takes the first device's copy of a replicated pytree."""
    return flax.jax_utils.unreplicate(tree)


def pmap(fn, *, donate_state: bool = False):
    """`jax.pmap` over the data axis; donating argument 0 (the train state) when asked."""
    return jax.pmap(fn, axis_name=AXIS, donate_argnums=(0,) if donate_state else ())

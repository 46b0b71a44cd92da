r"""Large draws spread over devices: :func:`sample_sharded`.

Every arprob sampler is ``sample(key, num_samples) -> tokens`` or ``(tokens, stats)``.
:func:`sample_sharded` draws ``num_samples`` of them in batches of ``batch_size``,
batch :math:`b` with the key ``fold_in(key, b)``, the batches spread over the
devices with ``jax.shard_map``.  The result is the concatenation of the batches
in order, laid out along the devices (a sharded ``jax.Array``), and it does
not depend on the number of devices: one device and four give the same
tokens, which is also the batching :func:`arprob.verify.check` uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from arprob._validation import check_int, check_key, check_memory
from arprob.errors import ArprobTypeError

__all__ = ["sample_sharded"]


def sample_sharded(sample, key, num_samples: int, *, devices="all", batch_size: int | None = None):
    """Draw ``num_samples`` samples with ``sample(key, n)``, batches spread over ``devices``.

    Parameters
    ----------
    sample
        A JAX sampling function ``sample(key, n)`` returning tokens ``(n, ...)``
        or ``(tokens, stats)`` whose arrays all have a leading axis of size ``n``
        (e.g. ``lambda key, n: ancestral(key, model, n)``).
    key
        PRNG key; batch ``b`` uses ``fold_in(key, b)``.
    num_samples
        Number of samples.
    devices
        ``"all"`` (every local device), ``None`` (the default device) or a
        :class:`jax.sharding.Mesh`.
    batch_size
        Samples per call of ``sample`` (default ``min(num_samples, 65536)``).

    Returns
    -------
    The output of ``sample`` for ``num_samples`` samples, arrays sharded along
    their first axis over the devices; identical for every device count.
    """
    from arprob.verify.stream import resolve_devices

    owner = "sample_sharded"
    if not callable(sample):
        raise ArprobTypeError(f"{owner}: sample must be callable as sample(key, num_samples), "
                              f"got {type(sample).__name__}")
    key = check_key(owner, key)
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    batch_size = check_int(owner, "batch_size", min(num_samples, 2**16) if batch_size is None else batch_size,
                           minimum=1)
    check_memory(owner, f"keeping num_samples={num_samples:,} samples", (num_samples, 64), itemsize=4,
                 fix="keep fewer samples, or count them as they are drawn (arprob.verify.check streams)")
    mesh, num_devices = resolve_devices(owner, devices)
    num_batches = -(-num_samples // batch_size)
    per_device = -(-num_batches // num_devices)
    batches = jnp.arange(per_device * num_devices, dtype=jnp.int32).reshape(num_devices, per_device)

    def run(batch_ids):
        outputs = jax.lax.map(lambda b: sample(jax.random.fold_in(key, b), batch_size), batch_ids.reshape(-1))
        return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), outputs)

    if mesh is not None:
        from jax.sharding import PartitionSpec

        spec = PartitionSpec("batches")
        function = jax.shard_map(run, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
        batches = jax.device_put(batches, jax.sharding.NamedSharding(mesh, spec))
    else:
        function = run
    out = jax.jit(function)(batches)
    return jax.tree_util.tree_map(lambda a: a[:num_samples], out)


r"""Streaming samples into counts: one compiled loop per chunk, sharded across devices.

Batch :math:`b` (``batch_size`` samples) is drawn as ``sampler(fold_in(key_sampler, b), batch_size)``
and counted with the randomization key ``fold_in(key_count, b)``; only the last
batch is partial (its padding rows get weight 0).  Every batch is a pure
function of ``(seed, b)``, so the counts do not depend on how batches are
grouped into calls or spread over devices:

* **Fused path** (the sampler traces under ``jax.jit``: every arprob sampler,
  any JAX function): a chunk of batches runs in one compiled
  ``lax.fori_loop`` that samples and counts, with no host round trip between
  batches.  With several devices (``devices="all"`` or a
  :class:`jax.sharding.Mesh`), ``jax.shard_map`` gives each device its own run
  of batch indices; integer counts come back per device and are added on the
  host in int64 (exact, so 1 device and 4 devices give identical counts).
* **Host path** (NumPy, PyTorch or any callable that does not trace): a
  Python loop calls the sampler and folds each batch into the counts with the
  same jit-compiled counter.

Counts are int32 inside a chunk (the chunk is sized so that they cannot
overflow) and int64 on the host; float accumulators (the calibration test's
expected masses, NFE) are returned per batch and summed on the host in batch
order, so they are bitwise reproducible too.  Memory stays bounded by the
chunk, whatever ``num_samples`` is.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError

__all__ = ["Streamed", "resolve_devices", "stream"]

MAX_CHUNK = 64  # batches per device per compiled call
TARGET_CALL_SECONDS = 0.5  # chunk calls are sized to about this long (progress granularity)
DEFAULT_BATCH = 2**16
DEVICE_BATCH_CAP = 2**20


class Streamed(NamedTuple):
    """Totals of a streamed run (host arrays)."""

    counts: list  # int64 arrays, one per counter
    floats: list  # float64 arrays or None, one per counter
    nfe_total: float | None
    out_of_range: int
    impossible: int
    impossible_example: tuple | None
    seconds: float  # sampling and counting, compilation excluded
    compile_seconds: float
    fused: bool
    num_devices: int
    batch_size: int
    timed_samples: int  # samples drawn within ``seconds`` (the host path's first batch also compiles)


def resolve_devices(owner: str, devices):
    """``None`` (default device), ``"all"`` (every local device) or a Mesh -> (mesh or None, count)."""
    if devices is None:
        return None, 1
    if isinstance(devices, str):
        if devices != "all":
            raise InvalidArgumentError(f"{owner}: devices={devices!r} is not understood; expected None (the "
                                       "default device), 'all' (every local device) or a jax.sharding.Mesh")
        local = jax.local_devices()
        return jax.sharding.Mesh(np.asarray(local), ("batches",)), len(local)
    if isinstance(devices, jax.sharding.Mesh):
        flat = np.asarray(devices.devices).reshape(-1)
        return jax.sharding.Mesh(flat, ("batches",)), flat.size
    raise ArprobTypeError(f"{owner}: devices must be None, 'all' or a jax.sharding.Mesh, "
                          f"got {type(devices).__name__}")


def split_output(output):
    """``(tokens, nfe or None)`` from a sampler's ``tokens`` or ``(tokens, stats)``."""
    if isinstance(output, tuple) and len(output) == 2 and not hasattr(output, "_fields"):
        tokens, stats = output
    else:
        tokens, stats = output, None
    nfe = getattr(stats, "nfe", None) if stats is not None else None
    if nfe is None and isinstance(stats, dict):
        nfe = stats.get("nfe")
    return tokens, nfe


def _check_tokens(owner: str, tokens, batch_size: int, length: int):
    shape = tuple(np.shape(tokens))
    if shape != (batch_size, length):
        raise ShapeError(f"{owner}: sampler(key, {batch_size}) returned tokens of shape {shape}, "
                         f"expected ({batch_size}, {length}) to match the target")
    dtype = np.dtype(tokens.dtype if hasattr(tokens, "dtype") else np.asarray(tokens).dtype)
    if not np.issubdtype(dtype, np.integer):
        raise ArprobTypeError(f"{owner}: the sampler returned tokens of dtype {dtype}, expected integer token "
                              "ids (cast with .astype(int32); a float or bool output usually means the sampler "
                              "returns probabilities or masks instead of tokens)")


def _batch_weights(batch, batch_size, full_batches, remainder):
    valid = jnp.where(batch < full_batches, batch_size, jnp.where(batch == full_batches, remainder, 0))
    return (jnp.arange(batch_size) < valid).astype(jnp.int32)


def _chunk_capacity(batch_size: int, increments: int) -> int:
    """Batches per call such that int32 counts cannot overflow."""
    return max(1, min(MAX_CHUNK, (2**31 - 1) // max(1, batch_size * increments)))


_COMPILED: OrderedDict = OrderedDict()  # recent compiled chunk loops, see stream()
_COMPILED_SIZE = 16


def stream(owner: str, sampler, counter, counter_shapes, *, num_samples: int, batch_size: int, length: int,
           key_sampler, key_count, devices=None, fuse=None, progress=None, increments: int = 1,
           cache_key=None, cache_refs=()) -> Streamed:
    """Draw ``num_samples`` samples in batches and return their counts (see the module docstring).

    ``counter(tokens, weights, key) -> (counts, floats, out_of_range, impossible, example)``
    is :func:`arprob.verify.projections.batch_counter`'s function; ``counter_shapes``
    its count sizes and float sizes (``None`` for no floats); ``increments`` the
    most increments one sample adds to one counter (``L`` for per-position tests).
    ``cache_key`` (hashable, identifying the counter: target and tests) lets a
    later call with the same sampler object reuse the compiled loop: keys, the
    sample size and the seed are arguments of the compiled function, so a run
    over many seeds compiles once.  ``cache_refs`` are the objects the key's
    ids stand for (the target): the entry holds them, so an id is never reused
    while its entry lives.
    """
    mesh, num_devices = resolve_devices(owner, devices)
    full_batches, remainder = divmod(num_samples, batch_size)
    num_batches = full_batches + (1 if remainder else 0)
    capacity = _chunk_capacity(batch_size, increments)
    traced = None
    if fuse is not False:
        devices_key = None if mesh is None else tuple(d.id for d in np.asarray(mesh.devices).reshape(-1))
        key = None if cache_key is None else (id(sampler), cache_key, batch_size, length, capacity, devices_key)
        cached = _COMPILED.get(key) if key is not None else None
        refs = (sampler, *cache_refs)
        if cached is not None and len(cached[0]) == len(refs) and all(a is b for a, b in zip(cached[0], refs)):
            _COMPILED.move_to_end(key)
            traced = (cached[1][0], 0.0, cached[1][2])
        else:
            traced, error = _trace_fused(sampler, counter, counter_shapes, batch_size, length, capacity, mesh,
                                         num_devices, owner, key_sampler, key_count)
            if traced is None and fuse:
                raise ArprobTypeError(f"{owner}: fuse=True but the sampler does not trace under jax.jit "
                                      f"({type(error).__name__}: {error}); pass fuse=None to run it in a Python "
                                      "loop")
            if traced is not None and key is not None:
                _COMPILED[key] = (refs, traced)
                while len(_COMPILED) > _COMPILED_SIZE:
                    _COMPILED.popitem(last=False)
    if traced is None:
        if mesh is not None and num_devices > 1:
            raise InvalidArgumentError(f"{owner}: devices={devices!r} needs a sampler that traces under jax.jit "
                                       "(a JAX function); this one runs on the host, so leave devices=None")
        return _stream_host(owner, sampler, counter, counter_shapes, num_samples, batch_size, length,
                            key_sampler, key_count, full_batches, remainder, num_batches, progress)
    scalars = (key_sampler, key_count, jnp.int32(full_batches), jnp.int32(remainder))
    return _run_fused(traced, scalars, counter_shapes, num_batches, batch_size, num_devices, capacity, num_samples,
                      progress)


def _trace_fused(sampler, counter, counter_shapes, batch_size, length, capacity, mesh, num_devices, owner,
                 key_sampler, key_count):
    """Compile the chunk function, or return (None, error) when the sampler does not trace."""
    count_sizes, float_sizes = counter_shapes
    float_dtype = jnp.result_type(float)
    nfe_seen = []

    def chunk(first, count, key_sampler, key_count, full_batches, remainder):
        def body(j, carry):
            counts, floats, nfe, out_of_range, impossible, example = carry
            batch = first + j
            tokens, nfe_b = split_output(sampler(jax.random.fold_in(key_sampler, batch), batch_size))
            if not nfe_seen:
                _check_tokens(owner, tokens, batch_size, length)
                nfe_seen.append(nfe_b is not None)
            weights = _batch_weights(batch, batch_size, full_batches, remainder)
            c, f, o, i, e = counter(jnp.asarray(tokens), weights, jax.random.fold_in(key_count, batch))
            counts = tuple(a + b for a, b in zip(counts, c))
            floats = tuple(None if a is None else a.at[j].set(b) for a, b in zip(floats, f))
            if nfe_b is not None:
                per_sample = jnp.broadcast_to(jnp.asarray(nfe_b), (batch_size,)).astype(float_dtype)
                nfe = nfe.at[j].set(jnp.sum(per_sample * weights))
            example = jnp.where((impossible == 0) & (i > 0), e, example)
            return counts, floats, nfe, out_of_range + o, impossible + i, example

        init = (tuple(jnp.zeros(size, jnp.int32) for size in count_sizes),
                tuple(None if size is None else jnp.zeros((capacity, size), float_dtype) for size in float_sizes),
                jnp.zeros(capacity, float_dtype), jnp.int32(0), jnp.int32(0), jnp.full(length, -1, jnp.int32))
        return jax.lax.fori_loop(0, count, body, init)

    def function(first, count, *scalars):
        out = chunk(first[0], count[0], *scalars)
        return jax.tree_util.tree_map(lambda a: a[None], out)

    scalars = (key_sampler, key_count, jnp.int32(0), jnp.int32(0))
    if mesh is not None:
        from jax.sharding import PartitionSpec

        spec, replicated = PartitionSpec("batches"), PartitionSpec()
        function = jax.shard_map(function, mesh=mesh, in_specs=(spec, spec) + (replicated,) * 4, out_specs=spec,
                                 check_vma=False)
        example_args = (jnp.zeros(num_devices, jnp.int32), jnp.zeros(num_devices, jnp.int32)) + scalars
    else:
        example_args = (jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32)) + scalars
    start = time.perf_counter()
    try:
        lowered = jax.jit(function).trace(*example_args).lower()
    except (ShapeError, ArprobTypeError):
        raise
    except Exception as error:  # the sampler does not trace (NumPy, PyTorch, Python control flow on values)
        return None, error
    compiled = lowered.compile()
    return (compiled, time.perf_counter() - start, nfe_seen[0] if nfe_seen else False), None


def _run_fused(traced, scalars, counter_shapes, num_batches, batch_size, num_devices, capacity, num_samples,
               progress):
    compiled, compile_seconds, has_nfe = traced
    count_sizes, float_sizes = counter_shapes
    totals = [np.zeros(size, np.int64) for size in count_sizes]
    float_parts = [[] if size is not None else None for size in float_sizes]
    nfe_parts, out_of_range, impossible, example = [], 0, 0, None
    done_batches, per_device, elapsed = 0, 1, 0.0
    while done_batches < num_batches:
        remaining = num_batches - done_batches
        per_device = max(1, min(per_device, capacity, -(-remaining // num_devices)))
        firsts = done_batches + per_device * np.arange(num_devices)
        counts_per = np.clip(num_batches - firsts, 0, per_device)
        start = time.perf_counter()
        out = compiled(jnp.asarray(firsts, jnp.int32), jnp.asarray(counts_per, jnp.int32), *scalars)
        out = jax.device_get(out)
        seconds = time.perf_counter() - start
        elapsed += seconds
        counts, floats, nfe, oor, imp, ex = out
        for total, part in zip(totals, counts):
            total += np.asarray(part, np.int64).sum(axis=0)
        for device in range(num_devices):  # batch order: device-major within a chunk
            used = int(counts_per[device])
            for parts, part in zip(float_parts, floats):
                if parts is not None:
                    parts.append(np.asarray(part[device, :used], np.float64))
            nfe_parts.append(np.asarray(nfe[device, :used], np.float64))
            if example is None and int(imp[device]) > 0:
                example = tuple(int(t) for t in ex[device])
        out_of_range += int(np.sum(oor))
        impossible += int(np.sum(imp))
        done_batches += int(counts_per.sum())
        if progress is not None:
            progress(min(done_batches * batch_size, num_samples), num_samples, elapsed)
        # size the next call to about TARGET_CALL_SECONDS
        per_batch = seconds / max(1, per_device)
        per_device = max(1, int(TARGET_CALL_SECONDS / max(per_batch, 1e-9)))
    floats_total = [None if parts is None else np.sum(np.concatenate([p for p in parts if p.size] or
                                                                     [np.zeros((0, size))]), axis=0)
                    for parts, size in zip(float_parts, float_sizes)]
    nfe_total = float(np.sum(np.concatenate(nfe_parts))) if has_nfe else None
    return Streamed(totals, floats_total, nfe_total, out_of_range, impossible, example, max(elapsed, 1e-12),
                    compile_seconds, True, num_devices, batch_size, num_samples)


def _stream_host(owner, sampler, counter, counter_shapes, num_samples, batch_size, length, key_sampler,
                 key_count, full_batches, remainder, num_batches, progress):
    count_sizes, float_sizes = counter_shapes
    jitted = jax.jit(counter)
    totals = [np.zeros(size, np.int64) for size in count_sizes]
    floats_total = [None if size is None else np.zeros(size, np.float64) for size in float_sizes]
    nfe_total, out_of_range, impossible, example = 0.0, 0, 0, None
    has_nfe = None
    elapsed, compile_seconds = 0.0, 0.0
    for batch in range(num_batches):
        start = time.perf_counter()
        tokens, nfe = split_output(sampler(jax.random.fold_in(key_sampler, batch), batch_size))
        _check_tokens(owner, tokens, batch_size, length)
        tokens = jnp.asarray(np.asarray(tokens) if not isinstance(tokens, jax.Array) else tokens)
        has_nfe = nfe is not None if has_nfe is None else has_nfe
        weights = _batch_weights(jnp.int32(batch), batch_size, full_batches, remainder)
        c, f, o, i, e = jax.device_get(jitted(tokens, weights, jax.random.fold_in(key_count, batch)))
        for total, part in zip(totals, c):
            total += np.asarray(part, np.int64)
        for index, part in enumerate(f):
            if part is not None:
                floats_total[index] += np.asarray(part, np.float64)
        if has_nfe:
            per_sample = np.broadcast_to(np.asarray(nfe, np.float64), (batch_size,))
            nfe_total += float(np.sum(per_sample * np.asarray(weights)))
        out_of_range += int(o)
        if example is None and int(i) > 0:
            example = tuple(int(t) for t in e)
        impossible += int(i)
        seconds = time.perf_counter() - start
        if batch == 0 and num_batches > 1:
            compile_seconds = seconds  # the first batch compiles the counter (and a jitted sampler)
        else:
            elapsed += seconds
        if progress is not None:
            progress(min((batch + 1) * batch_size, num_samples), num_samples, elapsed)
    timed = num_samples - (batch_size if num_batches > 1 else 0)
    return Streamed(totals, floats_total, nfe_total if has_nfe else None, out_of_range, impossible, example,
                    max(elapsed, 1e-12), compile_seconds, False, 1, batch_size, timed)


def choose_batch_size(num_samples: int, bytes_per_sample: float, num_devices: int = 1) -> int:
    """Samples per batch: ``min(n, 65536)`` on CPU; on an accelerator, scaled to its memory.

    On an accelerator with a known memory limit the batch grows (up to
    ``DEVICE_BATCH_CAP``) while the counters' estimated temporaries
    (``bytes_per_sample`` per sample) stay within 1/16 of the memory; on every
    device it shrinks when they would exceed 1 GiB (CPU) or that share.
    """
    device = jax.local_devices()[0]
    limit = None
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
            limit = stats.get("bytes_limit")
        except Exception:  # some backends do not report memory
            limit = None
    budget = (limit / 16) if limit else 2**30
    fits = max(256, int(budget // max(bytes_per_sample, 1.0)))
    preferred = min(DEVICE_BATCH_CAP if limit else DEFAULT_BATCH, fits)
    per_device = -(-num_samples // num_devices)
    if per_device <= preferred:
        return max(1, per_device)
    return int(2 ** math.floor(math.log2(preferred)))

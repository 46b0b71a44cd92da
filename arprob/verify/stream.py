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

The sampler is never called outside the counted batches.  With ``fuse=None``
batch 0 is drawn on the host path, with its real key; only when it comes back
as a :class:`jax.Array` is the sampler traced (a trace draws nothing) and
batches ``1, 2, ...`` run in the compiled loop.  A NumPy or PyTorch sampler is
therefore called exactly once per counted batch, and never with a tracer: no
warm-up batch is drawn on a real engine.  ``fuse=True`` traces first (the
caller says the sampler is a JAX function), and a compiled loop already cached
for the same sampler object is reused for every batch.

**Looks.**  With ``looks`` (increasing batch counts) and ``on_look``, the run
pauses after exactly those batches (chunks never cross a look, on any number of
devices), hands ``on_look`` a :class:`Streamed` snapshot of the totals so far,
and stops when it returns ``True``: the sequential test of
:func:`arprob.verify.check` and its sample split are built on this.  A look
sees the same counts on one device or many.

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
    num_samples: int = 0  # samples drawn and counted (less than asked when a look stopped the run)
    done_batches: int = 0  # batches drawn and counted


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
           cache_key=None, cache_refs=(), looks=(), on_look=None) -> Streamed:
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
    while its entry lives.  ``looks`` (increasing batch counts in ``[1, num_batches]``) and
    ``on_look(snapshot) -> bool`` pause the run after those batches; ``True`` stops it there.
    """
    mesh, num_devices = resolve_devices(owner, devices)
    full_batches, remainder = divmod(num_samples, batch_size)
    num_batches = full_batches + (1 if remainder else 0)
    capacity = _chunk_capacity(batch_size, increments)
    looks = tuple(sorted({int(b) for b in looks if 1 <= int(b) <= num_batches})) if on_look is not None else ()
    traced, probe = None, None
    if fuse is not False:
        devices_key = None if mesh is None else tuple(d.id for d in np.asarray(mesh.devices).reshape(-1))
        key = None if cache_key is None else (id(sampler), cache_key, batch_size, length, capacity, devices_key)
        cached = _COMPILED.get(key) if key is not None else None
        refs = (sampler, *cache_refs)
        if cached is not None and len(cached[0]) == len(refs) and all(a is b for a, b in zip(cached[0], refs)):
            _COMPILED.move_to_end(key)
            traced = (cached[1][0], 0.0, cached[1][2])
        else:
            if fuse is None:
                # batch 0 on the host, counted: a non-JAX sampler is never called outside the counted batches
                probe = _HostRun(owner, sampler, counter, counter_shapes, num_samples, batch_size, length,
                                 key_sampler, key_count, full_batches, remainder, num_batches, progress,
                                 looks, on_look)
                probe.run(0, 1)
                if probe.stopped:
                    return probe.result()
            if probe is not None and (num_batches == 1 or not probe.returned_jax):
                traced, error = None, None
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
        if probe is None:
            probe = _HostRun(owner, sampler, counter, counter_shapes, num_samples, batch_size, length,
                             key_sampler, key_count, full_batches, remainder, num_batches, progress, looks, on_look)
        probe.run(probe.done, num_batches)
        return probe.result()
    scalars = (key_sampler, key_count, jnp.int32(full_batches), jnp.int32(remainder))
    return _run_fused(traced, scalars, counter_shapes, num_batches, batch_size, num_devices, capacity, num_samples,
                      progress, host=probe, looks=looks, on_look=on_look)


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


def _samples_in(batches: int, batch_size: int, num_samples: int) -> int:
    """Samples in the first ``batches`` batches (only the last batch is partial)."""
    return min(num_samples, batches * batch_size)


def _sum_floats(float_parts, float_sizes):
    return [None if parts is None else np.sum(np.concatenate([p for p in parts if p.size] or [np.zeros((0, size))]),
                                              axis=0)
            for parts, size in zip(float_parts, float_sizes)]


def _run_fused(traced, scalars, counter_shapes, num_batches, batch_size, num_devices, capacity, num_samples,
               progress, host=None, looks=(), on_look=None):
    """Run the compiled loop over the batches that ``host`` (a :class:`_HostRun`, or None) has not drawn."""
    compiled, compile_seconds, has_nfe = traced
    count_sizes, float_sizes = counter_shapes
    totals = [np.zeros(size, np.int64) for size in count_sizes]
    float_parts = [[] if size is not None else None for size in float_sizes]
    nfe_parts, out_of_range, impossible, example = [], 0, 0, None
    done_batches, per_device, elapsed = 0, 1, 0.0
    timed_samples = num_samples
    if host is not None:  # batch 0 was drawn on the host (its time, with its compilation, counts as compiling)
        totals = [np.asarray(t, np.int64).copy() for t in host.totals]
        float_parts = [None if parts is None else list(parts) for parts in host.float_parts]
        nfe_parts = list(host.nfe_parts)
        out_of_range, impossible, example = host.out_of_range, host.impossible, host.example
        done_batches = host.done
        compile_seconds += host.compile_seconds + host.elapsed
        timed_samples = num_samples - min(num_samples, host.done * batch_size)

    def snapshot():
        nfe = float(np.sum(np.concatenate(nfe_parts))) if has_nfe and nfe_parts else None
        drawn = _samples_in(done_batches, batch_size, num_samples)
        timed = max(1, drawn - (num_samples - timed_samples))
        return Streamed([t.copy() for t in totals], _sum_floats(float_parts, float_sizes), nfe, out_of_range,
                        impossible, example, max(elapsed, 1e-12), compile_seconds, True, num_devices, batch_size,
                        timed, drawn, done_batches)

    while done_batches < num_batches:
        stop_at = next((b for b in looks if b > done_batches), num_batches)
        remaining = stop_at - done_batches
        per_device = max(1, min(per_device, capacity, -(-remaining // num_devices)))
        firsts = done_batches + per_device * np.arange(num_devices)
        counts_per = np.clip(stop_at - firsts, 0, per_device)
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
        if done_batches in looks and on_look(snapshot()):
            break
    return snapshot()


class _HostRun:
    """The host path's Python loop, run batch range by batch range (batch 0 first, to see what the sampler is).

    Float accumulators and NFE are kept per batch, in batch order, so that a run continued by the
    compiled loop sums them exactly as a fused run does.
    """

    def __init__(self, owner, sampler, counter, counter_shapes, num_samples, batch_size, length, key_sampler,
                 key_count, full_batches, remainder, num_batches, progress, looks=(), on_look=None):
        self.owner, self.sampler, self.length = owner, sampler, length
        self.looks, self.on_look, self.stopped = looks, on_look, False
        self.num_samples, self.batch_size, self.num_batches = num_samples, batch_size, num_batches
        self.key_sampler, self.key_count = key_sampler, key_count
        self.full_batches, self.remainder, self.progress = full_batches, remainder, progress
        count_sizes, float_sizes = counter_shapes
        self.float_sizes = float_sizes
        self.jitted = jax.jit(counter)
        self.totals = [np.zeros(size, np.int64) for size in count_sizes]
        self.float_parts = [None if size is None else [] for size in float_sizes]
        self.nfe_parts, self.has_nfe = [], None
        self.out_of_range, self.impossible, self.example = 0, 0, None
        self.elapsed, self.compile_seconds, self.done = 0.0, 0.0, 0
        self.returned_jax = False

    def run(self, first: int, stop: int):
        for batch in range(first, stop):
            start = time.perf_counter()
            batch_key = jax.random.fold_in(self.key_sampler, batch)
            if batch == 0:
                tokens, nfe = split_output(_first_call(self.owner, self.sampler, batch_key, self.batch_size))
            else:
                tokens, nfe = split_output(self.sampler(batch_key, self.batch_size))
            _check_tokens(self.owner, tokens, self.batch_size, self.length)
            if batch == 0:
                self.returned_jax = isinstance(tokens, jax.Array)
            tokens = jnp.asarray(np.asarray(tokens) if not isinstance(tokens, jax.Array) else tokens)
            self.has_nfe = nfe is not None if self.has_nfe is None else self.has_nfe
            weights = _batch_weights(jnp.int32(batch), self.batch_size, self.full_batches, self.remainder)
            c, f, o, i, e = jax.device_get(self.jitted(tokens, weights, jax.random.fold_in(self.key_count, batch)))
            for total, part in zip(self.totals, c):
                total += np.asarray(part, np.int64)
            for parts, part in zip(self.float_parts, f):
                if parts is not None:
                    parts.append(np.asarray(part, np.float64)[None])
            if self.has_nfe:
                per_sample = np.broadcast_to(np.asarray(nfe, np.float64), (self.batch_size,))
                self.nfe_parts.append(np.asarray([np.sum(per_sample * np.asarray(weights))]))
            self.out_of_range += int(o)
            if self.example is None and int(i) > 0:
                self.example = tuple(int(t) for t in e)
            self.impossible += int(i)
            seconds = time.perf_counter() - start
            if batch == 0 and self.num_batches > 1:
                self.compile_seconds = seconds  # the first batch compiles the counter (and a jitted sampler)
            else:
                self.elapsed += seconds
            self.done = batch + 1
            if self.progress is not None:
                self.progress(min(self.done * self.batch_size, self.num_samples), self.num_samples, self.elapsed)
            if self.done in self.looks and self.on_look(self.result()):
                self.stopped = True
                return

    def result(self) -> Streamed:
        """The totals so far (copies: a look's snapshot is not changed by later batches)."""
        nfe_total = float(np.sum(np.concatenate(self.nfe_parts))) if self.has_nfe and self.nfe_parts else None
        drawn = _samples_in(self.done, self.batch_size, self.num_samples)
        timed = max(1, drawn - (self.batch_size if self.num_batches > 1 else 0))
        elapsed = self.elapsed
        if self.done == 1 and self.num_batches > 1:  # stopped after batch 0: its time is all there is to report
            timed, elapsed = drawn, self.compile_seconds
        return Streamed([t.copy() for t in self.totals], _sum_floats(self.float_parts, self.float_sizes), nfe_total,
                        self.out_of_range, self.impossible, self.example, max(elapsed, 1e-12),
                        self.compile_seconds, False, 1, self.batch_size, timed, drawn, self.done)


def _first_call(owner: str, sampler, key, batch_size: int):
    """The sampler's first call, with its errors explained: most are a sampler that does not take a JAX key."""
    from arprob.errors import ArprobError

    try:
        return sampler(key, batch_size)
    except ArprobError:
        raise
    except Exception as error:
        raise ArprobTypeError(
            f"{owner}: the sampler's first call, sampler(key, {batch_size}), raised {type(error).__name__}: "
            f"{error}. check calls the sampler as sampler(key, num_samples) with a JAX PRNG key first; a sampler "
            "written as sampler(num_samples, key) must be wrapped (lambda key, n: f(n, key)), and a NumPy or "
            "PyTorch sampler that wants an integer seed or a numpy Generator takes seed_type='int' or "
            "seed_type='numpy' (or converts the key with arprob.verify.seeds(key, 1))") from error


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

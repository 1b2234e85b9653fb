"""Rendering across several devices: one image split by rows, or a batch of images.

One image.  The row blocks of the image (or of its ``-roi``) are dealt out in
contiguous runs to the devices of a 1-D mesh and rendered with ``shard_map``;
each device scans its own blocks.  What a device must know about the rows
before its own -- nanoBragg's pixel-to-pixel state -- is settled first:

* c-parity phi carry-over: a device starts from the end-of-sweep cell vectors
  if any pixel before its rows rendered something, else from the unrotated
  cell.  Whether a pixel renders depends only on the roi, the mask and the
  dmin cut, so every device reports "did any of my pixels render?" and an
  exclusive prefix-OR over devices gives each its starting state.
* tricubic interpolation switched off at the first out-of-range evaluation:
  every device first probes its rows (interpolation assumed on) and reports
  whether it met one; a device starts with interpolation off when an earlier
  device did.

With those carries the pixels are identical to the single-device render.

A batch.  :func:`render_batch` maps the renderer over a leading batch axis of
the scene (e.g. 64 orientations) and shards that axis over the devices;
:func:`mapped_render` is that map, also exported by :mod:`nbjax.renderer.aot`
for ``nbjax batch`` (one batched renderer for both).

Multi-host: call ``jax.distributed.initialize()`` in every process (see
docs/performance.md for the launch line); ``jax.devices()`` then lists the
devices of all hosts and the same functions shard over them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nbjax.renderer import engine

try:  # jax >= 0.4.35
    from jax import shard_map as _shard_map

    def _smap(fun, mesh, in_specs, out_specs):
        # the scans inside mix per-device and replicated values; skip the
        # varying-axes type check rather than annotate every carry
        return _shard_map(fun, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
except ImportError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map

    def _smap(fun, mesh, in_specs, out_specs):
        return _shard_map(fun, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def _devices(devices):
    available = jax.devices()
    if devices is None:
        return available
    if isinstance(devices, int):
        if devices > len(available):
            raise ValueError(f"{devices} devices requested, {len(available)} available")
        return available[:devices]
    return list(devices)


def _shard_flags(scene, cfg, mask, block_ids):
    """Per shard: did any pixel render (phi carry), did any evaluation leave the table."""
    carry = engine.initial_carry(scene)

    def one(flags, index):
        blk, has_run, _ = engine._prepare_block(scene, cfg, mask, carry, index)
        any_run, any_oob = flags
        any_run = any_run | jnp.any(has_run)
        if cfg.image_wide_fallback:  # the engine's switch-off search, entering with interpolation on
            _, still_on, _ = engine._interpolation_switch(scene, cfg, blk, jnp.asarray(True), carry.first_oob)
            any_oob = any_oob | ~still_on
        return (any_run, any_oob), None

    (any_run, any_oob), _ = lax.scan(one, (jnp.asarray(False), jnp.asarray(False)), block_ids)
    return any_run, any_oob


@functools.lru_cache(maxsize=16)
def _sharded_renderer(cfg: engine.RenderConfig, n_devices: int, has_mask: bool, device_ids: tuple):
    devices = [d for d in jax.devices() if d.id in device_ids]
    mesh = Mesh(np.array(devices), ("rows",))
    total = engine.n_blocks(cfg)
    per = -(-total // n_devices)
    needs_flags = cfg.uses_carryover or cfg.image_wide_fallback
    rows = PartitionSpec("rows")
    replicated = PartitionSpec()

    def flags_fn(scene, mask, block_ids):
        any_run, any_oob = _shard_flags(scene, cfg, mask if has_mask else None, block_ids)
        return any_run[None], any_oob[None]

    def render_fn(scene, mask, block_ids, run_before, oob_before):
        carry = engine.initial_carry(scene)
        _, _, _, end_state = engine._phi_states(scene, cfg, carry.phi_state)
        if cfg.uses_carryover:
            carry = carry._replace(phi_state=jnp.where(run_before[0], end_state, carry.phi_state))
        carry = carry._replace(interpolating=~oob_before[0])
        block = functools.partial(engine._block, scene, cfg, mask if has_mask else None)
        carry, blocks = lax.scan(block, carry, block_ids)
        return blocks, carry.omega_sum[None], carry.first_oob[None]

    flags = jax.jit(_smap(flags_fn, mesh, (replicated, replicated, rows), (rows, rows)))
    render = jax.jit(_smap(render_fn, mesh, (replicated, replicated, rows, rows, rows), (rows, rows, rows)))

    def run(scene, mask):
        block_ids = jnp.arange(per * n_devices)
        if needs_flags:
            any_run, any_oob = flags(scene, mask, block_ids)
            run_before = (jnp.cumsum(any_run) - any_run) > 0
            oob_before = (jnp.cumsum(any_oob) - any_oob) > 0
        else:
            run_before = jnp.zeros(n_devices, bool)
            oob_before = jnp.zeros(n_devices, bool)
        blocks, omega, first = render(scene, mask, block_ids, run_before, oob_before)
        found = first[:, 0] != 0
        record = first[jnp.argmax(found)]
        image = engine._assemble(cfg, blocks[:total], blocks.dtype)
        return engine.RenderResult(image=image, omega_sum=jnp.sum(omega), interpolation_off_at=record)

    return run


def render_sharded(scene: engine.Scene, cfg: engine.RenderConfig, mask=None, *, devices=None):
    """Render one image with its row blocks spread over ``devices`` (count or list).

    Pixels are identical to :func:`nbjax.renderer.engine.render`.
    """
    devs = _devices(devices)
    if len(devs) == 1:
        return engine.render(scene, cfg, mask)
    run = _sharded_renderer(cfg, len(devs), mask is not None, tuple(d.id for d in devs))
    mask_array = jnp.zeros((1, 1), bool) if mask is None else jnp.asarray(mask)
    return run(scene, mask_array)


def mapped_render(scenes: engine.Scene, cfg: engine.RenderConfig, mask=None, axes=None) -> engine.RenderResult:
    """``render_core`` of every scene of a batch: the one batched renderer (traced or exported).

    ``axes``: None (every leaf of ``scenes`` has the batch axis in front) or
    one entry per leaf in tree order, 0 for a batched leaf and None for one
    array shared by every image (e.g. the structure-factor table).  One
    ``mask`` (or None) serves every image.
    """
    if axes is None:
        in_axes = 0
    else:
        in_axes = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(scenes), list(axes))
    return jax.vmap(lambda scene: engine.render_core(scene, cfg, mask), in_axes=(in_axes,))(scenes)


def render_batch(scenes: engine.Scene, cfg: engine.RenderConfig, mask=None, *, devices=None, axes=None):
    """Render a batch of scenes (every leaf, or those whose ``axes`` entry is 0, with a leading batch axis).

    The batch axis is sharded over a 1-D device mesh (its length must be a
    multiple of the number of devices); each image is rendered whole; leaves
    without a batch axis (``axes`` entry None) are replicated.  Returns a
    RenderResult whose fields have the batch axis in front.
    """
    devs = _devices(devices)
    mesh = Mesh(np.array(devs), ("batch",))
    leaves, treedef = jax.tree_util.tree_flatten(scenes)
    axes = None if axes is None else tuple(axes)
    flags = (0,) * len(leaves) if axes is None else axes
    batch = next(np.shape(x)[0] for x, a in zip(leaves, flags) if a == 0)
    if batch % len(devs):
        raise ValueError(f"batch of {batch} is not a multiple of {len(devs)} devices")
    placed = [jax.device_put(x, NamedSharding(mesh, PartitionSpec("batch") if a == 0 else PartitionSpec()))
              for x, a in zip(leaves, flags)]
    scenes = jax.tree_util.tree_unflatten(treedef, placed)
    return _batch_renderer(cfg, mask is not None, tuple(d.id for d in devs), axes)(scenes, mask)


@functools.lru_cache(maxsize=16)
def _batch_renderer(cfg: engine.RenderConfig, has_mask: bool, device_ids: tuple, axes=None):
    """The batched renderer of these scenes over these devices, built once per configuration."""
    by_id = {d.id: d for d in jax.devices()}
    devs = [by_id[i] for i in device_ids]
    sharding = NamedSharding(Mesh(np.array(devs), ("batch",)), PartitionSpec("batch"))

    def run(scenes, mask):
        return mapped_render(scenes, cfg, mask if has_mask else None, axes)

    return jax.jit(run, out_shardings=sharding)

"""Pick numpy or jax.numpy for the arguments at hand.

The geometry functions are written once and run two ways: traced with JAX
(inside the renderer, under ``jit``/``grad``), or on the host with numpy for
nanoBragg's set-up, where results must be the same doubles as the C
program's: numpy calls the C library's ``sin``/``cos``/``sqrt`` as nanoBragg
does, while compiled XLA code may use its own approximations, and set-up
decisions such as ``Nc = ceil(sample_z / |c|)`` must not flip on the last bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def array_module(*values):
    """``jax.numpy`` if any value (or tuple element) is a JAX array or tracer, else ``numpy``."""
    for value in values:
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if isinstance(item, jax.Array):
                return jnp
    return np

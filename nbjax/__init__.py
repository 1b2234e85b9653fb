"""nbjax: nanoBragg as pure, jit-compiled JAX functions."""

__version__ = "0.1.0"

"""The renderer's modes: the values each static switch of :class:`~nbjax.renderer.engine.RenderConfig` takes.

A module of its own (no JAX) so that the command layer can check nbjax's
``--options`` against the same tuples before JAX is imported.
"""

SHAPES = ("square", "round", "gauss", "tophat")          # crystal shape: lattice factor of the spots
INTERPOLATION_FALLBACKS = ("c", "point")                 # tricubic off for the rest of the image / at that point
ACCUMULATIONS = ("spec", "c-parity")                     # -oversample_* factors weight each term / compound
PHI_CARRYOVERS = ("spec", "c-parity")                    # phi = 0 rotates the cell / reuses the last state

"""The renderer's modes: the values each static switch of :class:`~nbjax.renderer.engine.RenderConfig` takes.

Each mode is a :class:`enum.StrEnum`, so a member equals (and hashes as) its
command-line spelling: ``RenderConfig(shape="round")`` and
``RenderConfig(shape=Shape.ROUND)`` are one configuration and compile once.
A module of its own (no JAX) so that the command layer can check nbjax's
``--options`` against the same values before JAX is imported.
"""

import enum


class Shape(enum.StrEnum):
    """Crystal shape: the lattice factor that makes the spots (nanoBragg's ``-*_xtal`` flags)."""

    SQUARE = "square"    # parallelepiped: Π sin(N π h)/sin(π h)
    ROUND = "round"      # ellipsoid: Airy-like function of the distance to the nearest node
    GAUSS = "gauss"      # Gaussian of that distance
    TOPHAT = "tophat"    # 1 inside the spot radius, 0 outside


class InterpolationFallback(enum.StrEnum):
    """What tricubic interpolation does where its 4×4×4 neighbourhood leaves the table."""

    IMAGE_WIDE = "c"     # nanoBragg: off for the rest of the image (order-dependent)
    AT_POINT = "point"   # nearest-neighbour F at that evaluation only


class Mode(enum.StrEnum):
    """Physically correct (nanoBragg with its upstream fixes) or released nanoBragg.c, quirks included."""

    SPEC = "spec"
    C_PARITY = "c-parity"


SHAPES = tuple(Shape)
INTERPOLATION_FALLBACKS = tuple(InterpolationFallback)
ACCUMULATIONS = tuple(Mode)      # -oversample_* factors weight each term / compound on the running sum
PHI_CARRYOVERS = tuple(Mode)     # phi = 0 rotates the cell / reuses the last state

"""Refinable parameter groups: one registry that the fit, its JSON and its command line all read.

A group is a named set of :class:`~nbjax.params.Params` leaves that ``nbjax fit
--refine`` moves together, e.g. ``cell`` = the three lengths (Å) and three
angles (degrees).  Each :class:`Group` says, in one place:

* which leaves it moves under a configuration (``distance`` moves the close
  distance when the detector is placed by ``-close_distance``; ``beam_center``
  moves the near point, ORGX/ORGY, under the XDS/DIALS SAMPLE pivot);
* its size and the key of its value in ``fit_result.json``;
* its *physical unit*: the change that moves a spot at the detector edge by about
  one pixel, with ``φ = pixel / R`` (R: beam spot to the farthest roi corner) --
  lengths ``a φ``, angles ``φ`` rad, distance ``D φ``, wavelength ``λ φ``, beam
  centre one pixel, N one cell, scale 10 %, mosaic spread ``φ/4`` rad;
* the nanoBragg flags it replaces in the equivalent command line, and the flags
  that render the refined value.

:func:`get_groups`/:func:`set_groups` pack groups into one vector and back (a
fit's parameter vector).  Host-side helpers only read values; get/set are pure
jnp and differentiable.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np

from nbjax.constants import RTD
from nbjax.errors import InputError

__all__ = ["Group", "REGISTRY", "GROUPS", "lookup", "leaves", "group_size", "get_group", "set_group", "get_groups",
           "set_groups", "physical_units", "result_value", "command_flags"]

#: sizes of nanoBragg's crystal-size flags, replaced whenever N is refined
_SIZE_FLAGS = ("-N", "-Na", "-Nb", "-Nc", "-samplesize", "-sample_size", "-xtalsize", "-xtal_size", "-sample_thick",
               "-sample_x", "-sample_width", "-sample_y", "-width", "-sample_height", "-sample_z", "-height",
               "-xtal_thick", "-xtal_x", "-xtal_width", "-xtal_y", "-xtal_height", "-xtal_z")


def _g(x) -> str:
    return "%.12g" % float(x)


def _values(array) -> list:
    return [_g(x) for x in np.asarray(array).ravel()]


@dataclasses.dataclass(frozen=True)
class Group:
    """One refinable group (see the module docstring).

    ``leaves(config)``: its (section, field) leaves; ``unit(params, config, phi, pixel_mm)``:
    physical units of its values; ``replaces(config)``: the nanoBragg flags it drops from
    a command line; ``flags(params, config)``: the flags that render its refined value.
    ``result(params, config)``: its value as reported (default: the leaves).
    """

    name: str
    size: int
    result_key: str
    leaves: Callable
    unit: Callable
    replaces: Callable
    flags: Callable
    result: Callable | None = None
    listed: bool = False  # reported as a list even when it has one value


def _distance_leaf(config):
    return (("detector", "close_distance_mm" if config.close_distance_given else "distance_mm"),)


def _beam_center_leaf(config):
    return (("detector", "near_point_mm" if config.sample_pivot_near_point else "beam_center_mm"),)


def _beam_center_flags(p, config):
    if config.sample_pivot_near_point:
        pixel = float(p.detector.pixel_size_mm)
        near = np.asarray(p.detector.near_point_mm)
        return ["-ORGX", _g(near[0] / pixel + 0.5), "-ORGY", _g(near[1] / pixel + 0.5)]
    bc = np.asarray(p.detector.beam_center_mm)
    return ["-Xbeam", _g(bc[0]), "-Ybeam", _g(bc[1])]


def _derived(key):
    def value(p, config):
        from nbjax.params import derived_geometry

        return derived_geometry(p, config)[key]

    return value


def _n_flags(p, config):
    n = np.rint(np.asarray(p.crystal.n_cells)).astype(int)  # nanoBragg's -N takes whole numbers
    return ["-Na", str(n[0]), "-Nb", str(n[1]), "-Nc", str(n[2])]


REGISTRY = (
    Group("cell", 6, "cell",
          leaves=lambda c: (("crystal", "cell_A"), ("crystal", "cell_angles_deg")),
          unit=lambda p, c, phi, px: list(np.abs(np.asarray(p.crystal.cell_A)) * phi) + [phi * RTD] * 3,
          replaces=lambda c: {"-cell", "-mat", "-misset", "-misset_seed"},
          flags=lambda p, c: ["-cell"] + _values(p.crystal.cell_A) + _values(p.crystal.cell_angles_deg),
          listed=True),
    Group("misset", 3, "misset_deg",
          leaves=lambda c: (("crystal", "misset_deg"),),
          unit=lambda p, c, phi, px: [phi * RTD] * 3,
          replaces=lambda c: set(), flags=lambda p, c: [],  # written once for misset and cell, below
          listed=True),
    Group("N", 3, "N",
          leaves=lambda c: (("crystal", "n_cells"),),
          unit=lambda p, c, phi, px: [1.0] * 3,
          replaces=lambda c: set(_SIZE_FLAGS), flags=_n_flags, listed=True),
    Group("distance", 1, "distance_mm",
          leaves=_distance_leaf,
          unit=lambda p, c, phi, px: [abs(float(np.ravel(get_group(p, "distance", c))[0])) * phi],
          replaces=lambda c: {"-close_distance", "-distance"} if c.close_distance_given else {"-distance"},
          flags=lambda p, c: (["-close_distance", _g(p.detector.close_distance_mm)] if c.close_distance_given
                              else ["-distance", _g(p.detector.distance_mm)]),
          result=lambda p, c: _derived("distance_mm")(p, c) if c.close_distance_given else p.detector.distance_mm),
    Group("beam_center", 2, "beam_center_mm",
          leaves=_beam_center_leaf,
          unit=lambda p, c, phi, px: [px, px],
          replaces=lambda c: ({"-ORGX", "-ORGY", "-Xclose", "-Yclose"} if c.sample_pivot_near_point
                              else {"-Xbeam", "-Ybeam"}),
          flags=_beam_center_flags,
          result=lambda p, c: (_derived("beam_center_mm")(p, c) if c.sample_pivot_near_point
                               else p.detector.beam_center_mm),
          listed=True),
    Group("detector_rot", 3, "detector_rot_deg",
          leaves=lambda c: (("detector", "rotations_deg"),),
          unit=lambda p, c, phi, px: [phi * RTD] * 3,
          replaces=lambda c: {"-detector_rotx", "-detector_roty", "-detector_rotz"},
          flags=lambda p, c: [x for flag, v in zip(("-detector_rotx", "-detector_roty", "-detector_rotz"),
                                                   _values(p.detector.rotations_deg)) for x in (flag, v)],
          listed=True),
    Group("twotheta", 1, "twotheta_deg",
          leaves=lambda c: (("detector", "twotheta_deg"),),
          unit=lambda p, c, phi, px: [phi * RTD],
          replaces=lambda c: {"-twotheta"}, flags=lambda p, c: ["-twotheta", _g(p.detector.twotheta_deg)]),
    Group("wavelength", 1, "wavelength_A",
          leaves=lambda c: (("beam", "wavelength_A"),),
          unit=lambda p, c, phi, px: [float(p.beam.wavelength_A) * phi],
          replaces=lambda c: {"-lambda", "-wavelength", "-energy"},
          flags=lambda p, c: ["-lambda", _g(p.beam.wavelength_A)]),
    Group("scale", 1, "scale",
          leaves=lambda c: (("beam", "scale"),),
          unit=lambda p, c, phi, px: [0.1 * max(abs(float(p.beam.scale)), 1e-12)],
          replaces=lambda c: {"-fluence", "-flux", "-exposure"},
          flags=lambda p, c: ["-fluence", _g(float(p.beam.fluence) * float(p.beam.scale))]),
    Group("mosaic", 1, "mosaic_deg",
          leaves=lambda c: (("crystal", "mosaic_deg"),),
          unit=lambda p, c, phi, px: [phi * RTD / 4.0],
          replaces=lambda c: {"-mosaic", "-mosaicity", "-mosaic_spread"},
          flags=lambda p, c: ["-mosaic", _g(p.crystal.mosaic_deg)]),
)

#: refinable groups, in the order they are reported
GROUPS = tuple(g.name for g in REGISTRY)
_BY_NAME = {g.name: g for g in REGISTRY}


def lookup(name: str) -> Group:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InputError(f"--refine: unknown group {name!r} (known: {', '.join(GROUPS)})") from None


def leaves(group: str, config):
    """The (section, field) leaves a group moves under ``config``."""
    return lookup(group).leaves(config)


def group_size(group: str) -> int:
    return lookup(group).size


def get_group(params, group: str, config):
    """The group's values as one 1-D array."""
    return jnp.concatenate([jnp.ravel(getattr(getattr(params, s), f)) for s, f in leaves(group, config)])


def set_group(params, group: str, config, values):
    """``params`` with the group's leaves set from the 1-D array ``values``."""
    changes, start = {}, 0
    for section, field in leaves(group, config):
        old = getattr(getattr(params, section), field)
        size = int(np.prod(np.shape(old)))
        changes[f"{section}.{field}"] = jnp.reshape(values[start:start + size], jnp.shape(old))
        start += size
    return params.replace(**changes)


def get_groups(params, groups, config):
    """Several groups' values, in the order given, as one 1-D array (a fit's parameter vector)."""
    return jnp.concatenate([get_group(params, g, config) for g in groups])


def set_groups(params, groups, config, vector):
    """``params`` with the groups set from the 1-D array ``vector`` (the inverse of :func:`get_groups`)."""
    start = 0
    for g in groups:
        n = group_size(g)
        params = set_group(params, g, config, vector[start:start + n])
        start += n
    return params


def physical_units(params, config, groups, phi: float, pixel_mm: float) -> np.ndarray:
    """Per value of ``groups``: the change that moves a spot at the detector edge by about one pixel."""
    return np.asarray([u for g in groups for u in lookup(g).unit(params, config, phi, pixel_mm)], np.float64)


def result_value(params, config, group: str):
    """The group's refined value as reported: a float, or a list for multi-valued groups."""
    entry = lookup(group)
    value = entry.result(params, config) if entry.result is not None else get_group(params, group, config)
    value = np.asarray(value, np.float64).ravel()
    return [float(v) for v in value] if (value.size > 1 or entry.listed) else float(value[0])


def command_flags(params, config, groups) -> tuple[set, list]:
    """(flags to drop, flags to add) that make a nanoBragg command line render the refined groups.

    Any refined orientation (misset, or a cell that replaces a -mat crystal) is written as
    ``-misset``; a custom convention keeps its pivot explicit.
    """
    drop, add = set(), []
    for g in groups:
        entry = lookup(g)
        drop |= entry.replaces(config)
        add += entry.flags(params, config)
    if "misset" in groups or "cell" in groups:
        drop |= {"-misset", "-misset_seed"}
        add += ["-misset"] + _values(params.crystal.misset_deg)
    if config.convention == "custom" and add:
        drop |= {"-pivot"}
        add += ["-pivot", config.pivot]
    return drop, add

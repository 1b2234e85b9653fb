"""Pictures of images: a log-scaled preview and a side-by-side comparison (matplotlib).

* :func:`write_preview` -- the image on a log10 grey scale (dark = bright
  pixel), the direct-beam position marked with a red cross, axes in detector
  pixels (fast across, slow down, first pixel top left as in the SMV and PGM
  files), a colour bar in log10 photons per pixel.  The PNG is
  :data:`PREVIEW_WIDTH` pixels wide and as high as the detector's aspect ratio
  asks (clamped), see :func:`preview_size`.
* :func:`write_comparison` -- A, B, B − A and the radial profiles of A and B,
  side by side, with the agreement metrics as a title line; a PNG of
  :data:`COMPARISON_SIZE` pixels.

Any image is drawn: all zeros, one pixel, negative values, NaN or infinite
pixels (NaN and −inf are drawn as 0, +inf as the largest finite value).  Large
images are reduced for display by taking the maximum of each block of pixels,
so that single bright spots stay visible.

matplotlib is optional (``pip install nbjax[plot]``); without it these
functions raise :class:`~nbjax.errors.InputError` saying so.  Files are
written atomically.
"""

from __future__ import annotations

import io
import math

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import atomic_write

#: Width of a preview PNG in pixels.
PREVIEW_WIDTH = 800
#: (width, height) of a comparison PNG in pixels.
COMPARISON_SIZE = (1800, 520)
#: Longest side, in image pixels, drawn before block-max reduction.
DISPLAY_PIXELS = 1024
#: Dynamic range of the log scale: the floor is at most max / 10**5.
DECADES_SHOWN = 1e5
_DPI = 100


def require_matplotlib() -> None:
    """InputError (saying how to install it) when matplotlib is missing."""
    _pyplot()


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("PNG output needs matplotlib: pip install 'nbjax[plot]'") from None
    return plt


def finite_image(image) -> np.ndarray:
    """``image`` as a 2-D float64 array without NaN or infinities (see module docstring)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.size == 0:
        raise InputError(f"pictures: expected a non-empty 2-D image, got shape {image.shape}")
    finite = np.isfinite(image)
    if finite.all():
        return image
    top = float(image[finite].max()) if finite.any() else 0.0
    return np.nan_to_num(image, nan=0.0, posinf=top, neginf=0.0)


def block_max(image, limit=DISPLAY_PIXELS) -> np.ndarray:
    """Reduce ``image`` by an integer factor (maximum of each block) until its sides are <= ``limit``."""
    factor = max(1, math.ceil(max(image.shape) / limit))
    if factor == 1:
        return image
    slow, fast = image.shape
    padded = np.full((math.ceil(slow / factor) * factor, math.ceil(fast / factor) * factor), -np.inf)
    padded[:slow, :fast] = image
    return padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).max(axis=(1, 3))


def log_scaled(image):
    """(log10 image, vmin, vmax): positive pixels on a log scale, the rest at the floor.

    The floor is the 1st percentile of the positive pixels, but at most five
    decades (:data:`DECADES_SHOWN`) below the brightest (1 photon when no pixel
    is positive).
    """
    image = finite_image(image)
    positive = image[image > 0]
    floor = max(float(np.percentile(positive, 1)), float(positive.max()) / DECADES_SHOWN) if positive.size else 1.0
    shown = np.log10(np.maximum(image, floor))
    low, high = float(shown.min()), float(shown.max())
    if not high > low:
        high = low + 1.0
    return shown, low, high


def preview_size(shape) -> tuple[int, int]:
    """(width, height) in pixels of the preview PNG of an image of ``shape`` (slow, fast)."""
    slow, fast = shape
    aspect = slow / max(fast, 1)
    image_height = int(round(min(max(aspect * (PREVIEW_WIDTH - 160), 200), 1400)))
    return PREVIEW_WIDTH, image_height + 110


def _png_bytes(fig, plt) -> bytes:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def write_preview(path, image, *, beam_center_px=None, title=None):
    """Log-scaled PNG of ``image`` (slow, fast) with the direct beam marked.

    ``beam_center_px``: (fast, slow) position of the direct beam in pixels,
    measured from the outer corner of the first pixel; a marker outside the
    image is left out (and said in the title).
    """
    plt = _pyplot()
    image = finite_image(image)
    slow, fast = image.shape
    width, height = preview_size(image.shape)
    fig = plt.figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    ax = fig.add_axes([0.09, 0.07, 0.74, 0.85])
    bar_ax = fig.add_axes([0.86, 0.07, 0.03, 0.85])
    shown, low, high = log_scaled(block_max(image))
    extent = (0, fast, slow, 0)  # pixel edges: pixel (0, 0) covers [0, 1) x [0, 1)
    drawn = ax.imshow(shown, cmap="gray_r", vmin=low, vmax=high, extent=extent, interpolation="nearest",
                      aspect="auto")
    label = title or f"log10 photons / pixel  (max {image.max():.4g}, {fast} x {slow} pixels)"
    if beam_center_px is not None:
        x, y = (float(v) for v in beam_center_px)
        if math.isfinite(x) and math.isfinite(y) and 0 <= x <= fast and 0 <= y <= slow:
            ax.plot([x], [y], marker="+", color="red", markersize=16, mew=1.5, linestyle="none")
        else:
            label += "  (beam centre off the image)"
    ax.set_xlim(0, fast)
    ax.set_ylim(slow, 0)
    ax.set_xlabel("fast pixel")
    ax.set_ylabel("slow pixel")
    ax.set_title(label, fontsize=9)
    fig.colorbar(drawn, cax=bar_ax)
    atomic_write(path, _png_bytes(fig, plt))


def radial_profile(image, center=None, bins=100):
    """(radii, mean intensity) in ``bins`` rings about ``center``.

    ``center`` is (fast, slow) in pixels from the first pixel's corner; the
    default is the middle of the image.  Radii are in pixels (ring centres).
    """
    image = finite_image(image)
    slow, fast = np.indices(image.shape)
    cx, cy = (image.shape[1] / 2, image.shape[0] / 2) if center is None else (center[0], center[1])
    radius = np.hypot(fast + 0.5 - cx, slow + 0.5 - cy)
    edges = np.linspace(0, radius.max() + 1e-9, bins + 1)
    which = np.clip(np.digitize(radius.ravel(), edges) - 1, 0, bins - 1)
    sums = np.bincount(which, image.ravel(), bins)
    counts = np.bincount(which, minlength=bins)
    return 0.5 * (edges[1:] + edges[:-1]), sums / np.maximum(counts, 1)


def write_comparison(path, first, second, metrics=None, *, center=None):
    """A, B, B − A and their radial profiles side by side, with the metrics as text."""
    plt = _pyplot()
    first, second = finite_image(first), finite_image(second)
    width, height = COMPARISON_SIZE
    fig = plt.figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    axes = [fig.add_axes([0.03 + 0.245 * k, 0.12, 0.19, 0.72]) for k in range(4)]
    # A and B on one log scale, so that equal pixels look equal
    _, low, high = log_scaled(np.concatenate([block_max(first).ravel(), block_max(second).ravel()])[None, :])
    for ax, img, name in ((axes[0], first, "A (reference)"), (axes[1], second, "B")):
        shown = np.log10(np.maximum(block_max(img), 10.0 ** low))
        ax.imshow(shown, cmap="gray_r", vmin=low, vmax=high, interpolation="nearest", aspect="auto",
                  extent=(0, img.shape[1], img.shape[0], 0))
        ax.set_title(f"{name}, log10", fontsize=10)
    diff = second - first
    high_side, low_side = block_max(diff), -block_max(-diff)
    reduced = np.where(np.abs(high_side) >= np.abs(low_side), high_side, low_side)  # the larger deviation
    limit = float(np.max(np.abs(diff))) or 1.0
    drawn = axes[2].imshow(reduced, cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest",
                           aspect="auto", extent=(0, diff.shape[1], diff.shape[0], 0))
    axes[2].set_title("B − A", fontsize=10)
    fig.colorbar(drawn, ax=axes[2], fraction=0.08, pad=0.02)
    positive_floor = None
    for img, name in ((first, "A"), (second, "B")):
        r, profile = radial_profile(img, center)
        positive = profile[profile > 0]
        if positive.size:
            positive_floor = min(positive_floor or np.inf, float(positive.min()))
        axes[3].plot(r, profile, label=name)
    if positive_floor is not None:
        axes[3].set_yscale("log")
        axes[3].set_ylim(bottom=positive_floor)
    axes[3].set_xlabel("radius (pixels)")
    axes[3].set_title("radial profile (mean per ring)", fontsize=10)
    axes[3].legend()
    if metrics is not None:
        text = "   ".join(f"{k} = {v:.6g}" for k, v in metrics.as_dict().items())
        fig.text(0.5, 0.95, text, ha="center", va="center", fontsize=10)
    atomic_write(path, _png_bytes(fig, plt))

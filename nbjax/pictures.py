"""Pictures of images: a log-scaled preview and a side-by-side comparison (matplotlib).

matplotlib is optional (``pip install nbjax[plot]``); without it these
functions raise :class:`~nbjax.errors.InputError` saying so.  Files are written
atomically.
"""

from __future__ import annotations

import io

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import atomic_write


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("PNG output needs matplotlib: pip install 'nbjax[plot]'") from None
    return plt


def _log_image(image):
    image = np.asarray(image, dtype=np.float64)
    positive = image[image > 0]
    floor = np.percentile(positive, 1) if positive.size else 1.0
    return np.log10(np.maximum(image, floor))


def _save(fig, path, plt):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def write_preview(path, image, *, beam_center_px=None, title=None):
    """Log-scaled PNG of ``image`` (slow, fast) with the direct beam marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 7 * image.shape[0] / max(image.shape[1], 1) + 0.3))
    shown = ax.imshow(_log_image(image), cmap="gray_r", origin="upper", interpolation="nearest")
    if beam_center_px is not None:
        ax.plot([beam_center_px[0]], [beam_center_px[1]], "r+", markersize=14, mew=1.5)
    ax.set_xlabel("fast pixel")
    ax.set_ylabel("slow pixel")
    ax.set_title(title or "log10 photons / pixel")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    _save(fig, path, plt)


def radial_profile(image, center=None, bins=100):
    """Mean intensity in rings about ``center`` (fast, slow pixels; default the image centre)."""
    image = np.asarray(image, dtype=np.float64)
    slow, fast = np.indices(image.shape)
    cy, cx = (image.shape[0] / 2, image.shape[1] / 2) if center is None else (center[1], center[0])
    radius = np.hypot(fast - cx, slow - cy)
    edges = np.linspace(0, radius.max() + 1e-9, bins + 1)
    which = np.clip(np.digitize(radius.ravel(), edges) - 1, 0, bins - 1)
    sums = np.bincount(which, image.ravel(), bins)
    counts = np.bincount(which, minlength=bins)
    return 0.5 * (edges[1:] + edges[:-1]), sums / np.maximum(counts, 1)


def write_comparison(path, first, second, metrics=None):
    """A, B, B − A and their radial profiles side by side, with the metrics as text."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.8))
    for ax, img, name in ((axes[0], first, "A"), (axes[1], second, "B")):
        ax.imshow(_log_image(img), cmap="gray_r", interpolation="nearest")
        ax.set_title(f"{name} (log10)")
    diff = np.asarray(second, float) - np.asarray(first, float)
    limit = np.max(np.abs(diff)) or 1.0
    shown = axes[2].imshow(diff, cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest")
    axes[2].set_title("B − A")
    fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.04)
    for img, name in ((first, "A"), (second, "B")):
        r, profile = radial_profile(img)
        axes[3].semilogy(r, np.maximum(profile, 1e-30), label=name)
    axes[3].set_xlabel("radius (pixels)")
    axes[3].set_title("radial profile")
    axes[3].legend()
    if metrics is not None:
        text = "  ".join(f"{k}={v:.6g}" for k, v in metrics.as_dict().items())
        fig.suptitle(text, fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)

"""nbjax.products against a direct transcription of nanoBragg's loops (masks and boolean
indexing, the way the module computed them before it worked on the roi rectangle):
statistics, SMV and PGM pixels must be identical, bit for bit, for any roi, mask and
image (NaN, negative and overflowing pixels included)."""

import math

import numpy as np
import pytest

from nbjax import products


def reference(image, roi, mask, scale_request, adc, pgm_request, pixel_size_m=1e-4, oversample=2):
    spixels, fpixels = image.shape
    xmin, xmax, ymin, ymax = roi
    slow, fast = np.arange(spixels)[:, None], np.arange(fpixels)[None, :]
    visited = (slow >= ymin) & (slow <= ymax) & (fast >= xmin) & (fast <= xmax)
    counted = visited if mask is None else visited & (mask != 0)
    values = image[counted].astype(np.float64)
    max_I = max_x = max_y = 0.0
    if values.size and values.max() > 0.0:
        first = np.flatnonzero(counted.ravel())[np.argmax(values)]
        s, f = divmod(int(first), fpixels)
        max_I = float(values.max())
        sub = pixel_size_m / oversample
        max_x = sub * (f * oversample + oversample - 1) + sub / 2.0
        max_y = sub * (s * oversample + oversample - 1) + sub / 2.0
    n = values.size or 1
    mean = float(values.sum()) / n
    # sums of squares as products.statistics takes them: single-threaded einsum (BLAS dot's bits depend on its threads)
    rms = math.sqrt(float(np.einsum("i,i->", values, values)) / ((n if n > 1 else 2) - 1))
    dev = image[visited].astype(np.float64) - mean
    rmsd = math.sqrt(float(np.einsum("i,i->", dev, dev)) / ((dev.size if dev.size > 1 else 2) - 1))
    stats = (max_I, max_x, max_y, mean, rms, rmsd, int(values.size))
    scale = scale_request if scale_request > 0 else (55000.0 / max_I if max_I > 0 else 1.0)
    test = np.clip(image.astype(np.float64) * scale + adc, 0.0, 65535.0)
    ints = np.where(visited, np.floor((test + 0.5).astype(np.float32)).astype(np.uint16), 0).astype(np.uint16)
    pscale = pgm_request if pgm_request > 0 else (250.0 / (5.0 * rmsd) if rmsd > 0 else scale)
    pgm = np.trunc(np.maximum(np.minimum(image.astype(np.float64) * pscale, 255.0), 0.0)).astype(np.uint8)
    return stats, ints, np.where(visited, pgm, 0).astype(np.uint8)


def ours(image, roi, mask, scale_request, adc, pgm_request, pixel_size_m=1e-4, oversample=2):
    st = products.statistics(image, roi, mask, pixel_size_m=pixel_size_m, oversample=oversample)
    scale = products.int_scale(scale_request, st.max_I)
    pscale = products.pgm_scale(pgm_request, scale, st.rmsd)
    stats = (st.max_I, st.max_I_x_m, st.max_I_y_m, st.mean, st.rms, st.rmsd, st.count)
    return stats, products.int_image(image, roi, scale, adc), products.pgm_image(image, roi, pscale)


ROIS = [(0, 39, 0, 29), (3, 20, 5, 29), (0, 0, 7, 7), (10, 60, 25, 40), (39, 39, 29, 29)]


@pytest.mark.parametrize("roi", ROIS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("kind", ["photons", "with_nan", "negative", "bright"])
def test_products_identical_to_the_direct_loops(roi, masked, kind):
    rng = np.random.default_rng(hash((roi, masked, kind)) % 2**32)
    image = rng.gamma(0.5, 20.0, (30, 40)).astype(np.float32)
    if kind == "with_nan":
        image[4, 5] = np.nan
    elif kind == "negative":
        image -= 15.0
    elif kind == "bright":
        image[12, 17] = 3e9
        image[20, 3] = 3e9  # a tie: the first one counts
    mask = (rng.random(image.shape) > 0.3).astype(np.uint16) if masked else None
    for requests in [(0.0, 40.0, 0.0), (2.5, 10.0, 3.0)]:
        want, got = reference(image, roi, mask, *requests), ours(image, roi, mask, *requests)
        assert np.array_equal(np.array(got[0]), np.array(want[0]), equal_nan=True)
        assert got[1].dtype == np.uint16 and got[1].tobytes() == want[1].tobytes()
        assert got[2].dtype == np.uint8 and got[2].tobytes() == want[2].tobytes()


def test_brightest_pixel_position():
    image = np.zeros((30, 40), np.float32)
    image[12, 17] = image[20, 3] = 9.0
    st = products.statistics(image, (0, 39, 0, 29), None, pixel_size_m=1e-4, oversample=2)
    # first maximum in row-major order: slow 12, fast 17; centre of its last sub-pixel
    assert st.max_I == 9.0 and st.max_I_x_m == pytest.approx(0.5e-4 * 35.5) and st.max_I_y_m == pytest.approx(0.5e-4 * 25.5)
    assert st.mean == pytest.approx(18.0 / 1200) and st.count == 1200

"""float32: the evaluation mode (``--precision single``) and the library run without
float64 (JAX's default), each against nanoBragg.c.

In the evaluation mode pixel geometry stays float64 and the per-(pixel, step)
lattice arithmetic, table lookups and sums run in float32; without float64
everything is float32.  Bound from the issue: r >= 0.999999 and max
relative error <= 1e-3 on pixels above 1e-3 of the maximum.
"""

import numpy as np
import pytest

from conftest import case_args, case_dir, reference_image
from nbjax import experiment
from nbjax.renderer import engine
from nbjax.compare import metrics


@pytest.mark.parametrize("name", ["p08_mat_scaled_small", "p07_triclinic_misset_hkl", "supervisor"])
def test_single_precision_meets_its_bound(name, in_inputs_dir):
    if not (case_dir(name, "c") / "float.bin.gz").exists():
        pytest.skip("reference image not available here")
    exp = experiment.build(case_args(name), accumulation="c-parity", phi_carryover="c-parity",
                           evaluation_dtype="float32")
    image = np.asarray(engine.render(exp.scene, exp.config, exp.mask).image, dtype=np.float32)
    m = metrics(reference_image(name, "c").reshape(image.shape), image)
    assert m.pearson_r >= 0.999999, m
    assert m.max_rel_err <= 1e-3, m
    assert abs(m.sum_ratio - 1) <= 1e-4, m
    # and it really is not the float64 result
    assert m.max_rel_err > 0


# The library as a user without float64 runs it: JAX's default precision (float32
# everywhere, geometry included), in a fresh process since these tests run in float64.
FLOAT32_SCRIPT = r"""
import json, shlex, sys
import numpy as np
import jax
assert not jax.config.jax_enable_x64
from nbjax import experiment
from nbjax.renderer import engine
out = {}
for name, args in json.loads(sys.argv[1]).items():
    exp = experiment.build(shlex.split(args), accumulation="c-parity", phi_carryover="c-parity")
    image = np.asarray(engine.render(exp.scene, exp.config, exp.mask).image)
    dtypes = sorted({str(x.dtype) for x in jax.tree_util.tree_leaves(exp.scene) if hasattr(x, "dtype")})
    np.save(name + ".npy", image)
    out[name] = dict(image=str(image.dtype), scene=dtypes)
print(json.dumps(out))
"""
FLOAT32_CASES = ["p01_cubic_mosflm",          # a pixel centred on the direct beam (h = k = l = 0)
                 "p07_triclinic_misset_hkl", "p17_mosaic_seeded", "p52_interpolate_switch_off"]


def test_library_in_float32_meets_the_bound(in_inputs_dir):
    import json
    import os
    import subprocess
    import sys
    import warnings

    from conftest import ROOT

    env = dict(os.environ, JAX_ENABLE_X64="0", PYTHONPATH=os.pathsep.join(
        [str(ROOT.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    cases = {name: (case_dir(name, "c") / "args.txt").read_text() for name in FLOAT32_CASES}
    done = subprocess.run([sys.executable, "-c", FLOAT32_SCRIPT, json.dumps(cases)], env=env, cwd=in_inputs_dir,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    kinds = json.loads(done.stdout.strip().splitlines()[-1])
    for name in FLOAT32_CASES:
        assert kinds[name]["image"] == "float32" and "float64" not in kinds[name]["scene"], (name, kinds[name])
        image = np.load(in_inputs_dir / (name + ".npy"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # a NaN or infinite pixel fails here
            m = metrics(reference_image(name, "c").reshape(image.shape), image)
        assert np.all(np.isfinite(image)), name
        assert m.pearson_r >= 0.999999, (name, m)
        assert m.max_rel_err <= 1e-3, (name, m)
        assert abs(m.sum_ratio - 1) <= 1e-4, (name, m)

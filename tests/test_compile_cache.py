"""The persistent compilation cache: a second ``nbjax`` process loads what the first compiled."""

import os
import subprocess
import sys

from conftest import INPUTS

ARGS = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -detpixels 64 -pixel 0.2 -distance 100 -nonoise -nopgm".split()

SECOND = r"""
import sys, jax
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if "cache_hit" in event else None)
from nbjax import cli
code = cli.main(sys.argv[1:] + ["--quiet"])
print("HITS", len(hits), "CODE", code)
"""


def test_second_process_uses_the_cache(tmp_path):
    for f in INPUTS.iterdir():
        os.symlink(f, tmp_path / f.name)
    cache = tmp_path / "cache"
    env = dict(os.environ, NBJAX_CACHE_DIR=str(cache))
    first = subprocess.run([sys.executable, "-m", "nbjax"] + ARGS + ["--quiet"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first run wrote nothing to the cache"
    second = subprocess.run([sys.executable, "-c", SECOND] + ARGS, cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    hits = int(second.stdout.split("HITS")[1].split()[0])
    assert hits >= 1, second.stdout
    assert sorted(p.name for p in cache.iterdir()) == entries   # nothing new had to be compiled
    # --no-compile-cache leaves the directory alone
    third = subprocess.run([sys.executable, "-m", "nbjax"] + ARGS + ["--quiet", "--no-compile-cache", "-floatfile", "x.bin"],
                           cwd=tmp_path, env=dict(env, NBJAX_CACHE_DIR=str(tmp_path / "other")),
                           capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and not (tmp_path / "other").exists()

"""Render the batch references with nanoBragg.c (run from this folder; see README.md).

    python make_golden.py /tmp/nbc/nanoBragg /tmp/nbc/nanoBragg_spec

Every job is one nanoBragg.c process given exactly the flags nbjax's job i
gets: the common flags, then the job line (jobs.txt, the series frames, the
stills lines in stills_jobs.txt).  OMP_NUM_THREADS=1.
"""

import gzip
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
INPUTS = HERE.parent / "inputs"


def main(c_binary, spec_binary):
    sys.path.insert(0, str(HERE.parent.parent.parent))
    from nbjax import batch

    common = shlex.split((HERE / "common.txt").read_text())
    sets = {
        "jobs": batch.read_jobs(HERE / "jobs.txt"),
        "series": batch.series_lines(common + shlex.split((HERE / "series.txt").read_text()), 12),
        "stills": batch.read_jobs(HERE / "stills_jobs.txt"),
    }
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name, jobs in sets.items():
        extra = shlex.split((HERE / "series.txt").read_text()) if name == "series" else []
        for oracle, binary in (("c", c_binary), ("spec", spec_binary)):
            out = HERE / oracle / name
            out.mkdir(parents=True, exist_ok=True)
            for i, job in enumerate(jobs, start=1):
                with tempfile.TemporaryDirectory() as scratch:
                    for f in ("A.mat", "scaled.hkl"):
                        os.symlink(INPUTS / f, Path(scratch) / f)
                    argv = [binary] + common + extra + list(job.tokens) + ["-floatfile", "float.bin", "-noprogress"]
                    subprocess.run(argv, cwd=scratch, env=env, check=True, stdout=subprocess.DEVNULL)
                    data = (Path(scratch) / "float.bin").read_bytes()
                with gzip.GzipFile(out / f"{i:03d}.bin.gz", "wb", mtime=0) as handle:
                    handle.write(data)


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""extract + invert + phase through a REAL single-node SLURM (scripts/slurm-up.sh starts
munged, slurmctld and slurmd); results must equal the local run. Skipped, with the reason
printed, only when SLURM cannot be started on this machine."""
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import load_config
from pipeline.io.store import Store
from pipeline.parallel.cluster import job_script
from pipeline.stages.extract import extract
from pipeline.stages.invert import invert
from pipeline.stages.phase import phase

pytestmark = pytest.mark.slow   # the whole module: `make test` runs it, `make test-fast` not

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def slurm():
    r = subprocess.run(["bash", str(REPO / "scripts" / "slurm-up.sh")], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        reason = f"SLURM could not be started here: {r.stderr.strip()[-500:]}"
        print(reason)
        pytest.skip(reason)
    return "slurm-local"


def test_job_script_quotes_and_requests(slurm):
    script = job_script(slurm)
    assert "#SBATCH -p debug" in script and "--cpus-per-task=1" in script
    assert "distributed.cli.dask_worker" in script


def test_slurm_run_equals_local_run(tmp_path, slurm, corpus_manifest, corpus):
    cfg = load_config("mel80-16k")
    local, remote = tmp_path / "local.zarr", tmp_path / "slurm.zarr"
    assert extract(corpus_manifest, local, cfg, with_mag=True, shard_seconds=10, progress=False).ok
    res = extract(corpus_manifest, remote, cfg, with_mag=True, shard_seconds=10, workers=2,
                  cluster="slurm", profile=slurm, progress=False)
    assert res.ok and res.done == len(corpus)
    a, b = Store(local), Store(remote)
    for n in a.shard_names():
        np.testing.assert_array_equal(a.read_array(n, "mel"), b.read_array(n, "mel"))
        assert a.shard_attrs(n) == b.shard_attrs(n)
    assert invert(remote, "nnls", workers=2, cluster="slurm", profile=slurm, progress=False).ok
    assert invert(local, "nnls", progress=False).ok
    for n in a.shard_names():
        # float32 FISTA, 1 thread on SLURM vs 2 here: the matmuls' sums split differently
        # (up to 2.2e-5 on magnitudes of 1-7 on an AMD EPYC; 1e-4 is 80 dB below 1)
        np.testing.assert_allclose(a.read_array(n, "mag"), b.read_array(n, "mag"), atol=1e-4)
    wl, ws = tmp_path / "wl", tmp_path / "ws"
    assert phase(local, wl, "fgla", n_iter=30, source="true", progress=False).ok
    assert phase(remote, ws, "fgla", n_iter=30, source="true", workers=2, cluster="slurm",
                 profile=slurm, progress=False).ok
    for u in corpus:
        x, _ = sf.read(wl / f"{u.id}.wav", dtype="int16")
        y, _ = sf.read(ws / f"{u.id}.wav", dtype="int16")
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1, u.id


def test_bad_partition_fails_in_seconds_with_sbatchs_words(tmp_path, slurm, corpus_manifest):
    """A profile naming a partition SLURM does not have hung the run (jobs never start)."""
    import time

    from pipeline.parallel.cluster import ClusterError
    bad = tmp_path / "bad.toml"
    text = (REPO / "configs" / "cluster-slurm-local.toml").read_text()
    bad.write_text(text.replace('queue = "debug"', 'queue = "nope"'))
    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match="(?i)invalid partition"):
        extract(corpus_manifest, tmp_path / "s.zarr", load_config("mel80-16k"), workers=2,
                cluster="slurm", profile=str(bad), progress=False)
    assert time.perf_counter() - t0 < 60

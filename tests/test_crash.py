"""SIGKILL `pipeline extract` and `pipeline phase` mid-run; re-run; outputs must be identical
to an uninterrupted run, with no missing or duplicated utterances."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import assert_same_store

from pipeline.io.store import Store

pytestmark = pytest.mark.slow   # the whole module: `make test` runs it, `make test-fast` not

PIPELINE = [sys.executable, "-m", "pipeline.cli"]


def run(*args):
    subprocess.run([*PIPELINE, *map(str, args)], check=True, capture_output=True)


def kill_when(args, ready, timeout=120):
    """Start the CLI in its own process group; SIGKILL the group once ready() is true."""
    p = subprocess.Popen([*PIPELINE, *map(str, args)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not ready():
        if p.poll() is not None:
            raise AssertionError("the run finished before it could be killed: make it longer")
        if time.time() - t0 > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            raise AssertionError("condition never met")
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def complete_shards(path: Path) -> int:
    if not (path / "zarr.json").exists():
        return 0
    try:
        s = Store(path)
        return sum(s.is_complete(n) for n in s.shard_names())
    except Exception:
        return 0


def test_sigkill_extract_then_resume(tmp_path, corpus_manifest, corpus):
    ref, out = tmp_path / "ref.zarr", tmp_path / "run.zarr"
    common = ["--with-mag", "--shard-seconds", "3", "-q"]
    run("extract", corpus_manifest, "--out", ref, *common)
    total = len(Store(ref).shard_names())
    kill_when(["extract", corpus_manifest, "--out", out, *common],
              lambda: complete_shards(out) >= 2)
    assert complete_shards(out) < total
    run("extract", corpus_manifest, "--out", out, *common)
    assert_same_store(ref, out)
    ids = [e.id for e in Store(out).all_entries()]
    assert sorted(ids) == sorted(u.id for u in corpus) and len(ids) == len(set(ids))


def test_sigkill_phase_then_resume(tmp_path, store80, corpus):
    ref, out = tmp_path / "ref", tmp_path / "run"
    common = ["--source", "true", "--iters", "60", "--batch-frames", "400", "-q"]
    run("phase", store80, "--out", ref, *common)
    kill_when(["phase", store80, "--out", out, *common],
              lambda: len(list(out.rglob("*.wav"))) >= 3)
    n_before = len(list(out.rglob("*.wav")))
    assert n_before < len(corpus)
    run("phase", store80, "--out", out, *common)
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert got == sorted(f"{u.id}.wav" for u in corpus)
    assert not list(out.rglob(".tmp-*"))
    for u in corpus:
        a, _ = sf.read(ref / f"{u.id}.wav", dtype="int16")
        b, _ = sf.read(out / f"{u.id}.wav", dtype="int16")
        np.testing.assert_array_equal(a, b, err_msg=u.id)

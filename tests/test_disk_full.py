"""A full disk ends a run in one line with its own exit status (3), leaves records that match
what is on disk, and the same command finishes after space is freed. Needs a small tmpfs
(root); skipped with the reason where it cannot be mounted."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import copy_recordings

from pipeline.config import load_config
from pipeline.stages.extract import extract

pytestmark = pytest.mark.slow


@pytest.fixture()
def tiny_disk(tmp_path):
    """A tmpfs of 400 KiB at ``tmp_path/disk``; ``resize(kib)`` grows it (freeing space)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'})")

    def resize(kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(mnt)], check=True)

    try:
        yield mnt, resize
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args), "-q"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "500"})


def test_phase_on_a_full_disk_says_so_and_resumes(tmp_path, wav_corpus, tiny_disk):
    mnt, resize = tiny_disk
    corpus = copy_recordings(wav_corpus, tmp_path / "c")
    store = tmp_path / "s.zarr"
    assert extract(corpus, store, load_config("mel80-16k"), progress=False).ok
    out = mnt / "wav"
    r = cli("phase", store, "--out", out, "--iters", "2")
    assert r.returncode == 3, r.stderr
    assert "no space left on device" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    written = sorted(out.glob("*.wav"))
    assert len(written) < len(wav_corpus)
    for p in written:                                     # what is there is whole
        ref = sf.info(str(corpus / p.name)).frames
        assert sf.info(str(p)).frames == ref and np.isfinite(sf.read(str(p))[0]).all()
    assert not (out / "failures.csv").exists()            # no item was at fault
    resize(4096)
    r = cli("phase", store, "--out", out, "--iters", "2")
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.wav"))) == len(wav_corpus)
    assert not list(out.glob(".tmp-*"))


def test_extract_on_a_full_disk_says_so_and_resumes(tmp_path, wav_corpus, tiny_disk):
    mnt, resize = tiny_disk
    corpus = copy_recordings(wav_corpus, tmp_path / "c")
    store = mnt / "s.zarr"
    r = cli("extract", corpus, "--out", store, "--with-mag", "--shard-seconds", "5")
    assert r.returncode == 3, r.stderr
    assert "no space left on device" in r.stderr and "Traceback" not in r.stderr
    for csv_file in mnt.glob("*.csv"):                    # never a half-written list
        assert csv_file.stat().st_size > 0
    resize(8192)
    r = cli("extract", corpus, "--out", store, "--with-mag", "--shard-seconds", "5")
    assert r.returncode == 0, r.stderr
    info = subprocess.run([sys.executable, "-m", "pipeline.cli", "info", str(store)],
                          capture_output=True, text=True)
    assert info.returncode == 0 and "failures   extract 0, invert 0" in info.stdout
    assert "extract" in info.stdout and "damaged" not in info.stdout

"""Shared fixtures: the real-speech test corpus (Debian pocketsphinx-testdata) and stores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.io.manifest import read_manifest
from pipeline.io.store import Store
from pipeline.recipes.pocketsphinx import POCKETSPHINX_DIR
from pipeline.stages.extract import extract

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "manifests" / "pocketsphinx.jsonl"


@pytest.fixture(scope="session")
def corpus_manifest() -> Path:
    if not POCKETSPHINX_DIR.is_dir():
        pytest.fail("pocketsphinx-testdata is not installed: run `make test` (it installs it)")
    return MANIFEST


@pytest.fixture(scope="session")
def corpus(corpus_manifest):
    return read_manifest(corpus_manifest)


@pytest.fixture(scope="session")
def wav_corpus(corpus):
    """Only the 10 wav utterances (they have reference files PESQ can read directly)."""
    return [u for u in corpus if u.path.endswith(".wav")]


@pytest.fixture(scope="session")
def store80(tmp_path_factory, corpus_manifest):
    out = tmp_path_factory.mktemp("stores") / "ps80.zarr"
    res = extract(corpus_manifest, out, load_config("mel80-16k"), with_mag=True,
                  shard_seconds=12.0, progress=False)
    assert res.ok, res.failures
    return out


def copy_recordings(utts, folder: Path) -> Path:
    """The test corpus's wavs ``utts`` copied into ``folder``: a user's folder of recordings."""
    import shutil
    folder.mkdir(parents=True, exist_ok=True)
    for u in utts:
        shutil.copy(u.path, folder / Path(u.path).name)
    return folder


def snapshot(path: Path, arrays=("mel", "mag_true")) -> dict:
    """Every shard's arrays and attributes: two stores are identical when snapshots are."""
    s = Store(path)
    out = {}
    for n in s.shard_names():
        g = s.shard_group(n)
        out[n] = ({k: np.asarray(g[k][...]) for k in arrays if k in g}, dict(g.attrs))
    return out


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for n in sa:
        assert sa[n][0].keys() == sb[n][0].keys()
        for k in sa[n][0]:
            np.testing.assert_array_equal(sa[n][0][k], sb[n][0][k], err_msg=f"{n}/{k}")
        assert sa[n][1] == sb[n][1]


def default_sigint() -> None:
    """``preexec_fn`` for a child that must take Ctrl-C as a user's shell gives it: a run
    started in the background of a non-interactive shell (CI, nohup) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _sigint_kept():
    """No test may leave this process's Ctrl-C handler changed: dask-jobqueue's import set it
    to sys.exit(), and a later in-process run would exit 0 on Ctrl-C."""
    import signal
    before = signal.getsignal(signal.SIGINT)
    yield
    assert signal.getsignal(signal.SIGINT) is before, "the test changed the SIGINT handler"

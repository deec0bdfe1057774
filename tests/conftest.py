"""Shared fixtures: the real-speech test corpus (Debian pocketsphinx-testdata) and stores."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.extract import extract
from pipeline.manifest import POCKETSPHINX_DIR, prepare_pocketsphinx, read_manifest

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

"""The wheel carries the presets and the shipped weights: built with `pip wheel .`, installed
(not editable) into a folder of its own and run from another directory, it vocodes with a
preset's learned model and extracts with another preset (a wheel without package data
answered "config 'hifigan-22k' not found")."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.dsp.mel import mel_spectrogram
from pipeline.io.audio import load

pytestmark = pytest.mark.slow   # the whole module: `make test` runs it, `make test-fast` not

REPO = Path(__file__).resolve().parent.parent


def test_installed_wheel_has_presets_and_weights(tmp_path, wav_corpus):
    wheels, site, src = tmp_path / "wheels", tmp_path / "site", tmp_path / "src"
    # built from a copy: setuptools writes build/ beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "pipeline", src / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(src)], check=True, capture_output=True)
    (whl,) = wheels.glob("pipeline-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "pipeline/presets/hifigan-22k.toml" in names
    assert "pipeline/pretrained/invert-hifigan-22k.pt" in names
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(whl)], check=True, capture_output=True)
    # the wheel's package first; its dependencies from this environment
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "elsewhere"
    (work / "mels").mkdir(parents=True)
    cfg = load_config("hifigan-22k")
    y = load(wav_corpus[0].path, cfg.sample_rate)
    with torch.inference_mode():
        np.save(work / "mels" / "a.npy", mel_spectrogram(torch.from_numpy(y)[None], cfg)[0].numpy())
    where = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(site)), where.stdout
    cli = [sys.executable, "-m", "pipeline.cli"]
    r = subprocess.run([*cli, "vocode", "mels", "--out", "wavs", "--preset", "hifigan-22k",
                        "--method", "model", "--iters", "4", "-q"], cwd=work, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (work / "wavs" / "a.wav").exists()
    audio = work / "audio"
    audio.mkdir()
    os.symlink(wav_corpus[0].path, audio / "a.wav")
    r = subprocess.run([*cli, "extract", "audio", "--out", "s.zarr", "--config", "mel250-16k",
                        "-q"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

"""Errors and hints that pointed the user the wrong way, scores that misled, small CLI
papercuts: each trial as a user made it, on real speech (each test failed before its fix)."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import copy_recordings

from pipeline.config import load_config
from pipeline.dsp.mel import utterance_features
from pipeline.errors import InputError
from pipeline.io.audio import load
from pipeline.io.store import StoreError
from pipeline.stages.extract import extract
from pipeline.stages.phase import phase
from pipeline.stages.score import score
from pipeline.stages.vocode import vocode

CFG = load_config("mel80-16k")
HIFIGAN = load_config("hifigan-22k")


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "400"})


@pytest.fixture()
def recordings(tmp_path, wav_corpus):
    return copy_recordings(wav_corpus[:3], tmp_path / "rec")


def test_batch_of_one_frames_first_and_grad_tensors_vocode(tmp_path, wav_corpus):
    """`(1, T, 80)` said 'has 611 mels ... pass --n-mels 611'; a `.pt` saved with
    requires_grad said torch's 'Use tensor.detach()'. Both are the same mel as `(80, T)`."""
    y = load(wav_corpus[0].path, HIFIGAN.sample_rate)
    mel = utterance_features([y], HIFIGAN)[1][0]                    # [T, 80]
    d = tmp_path / "m"
    d.mkdir()
    np.save(d / "plain.npy", mel.T)
    np.save(d / "batch.npy", mel[None])                              # (1, T, 80)
    torch.save(torch.from_numpy(mel.T.copy()).requires_grad_(), d / "grad.pt")
    res = vocode(d, tmp_path / "o", HIFIGAN, n_iter=4, progress=False)
    assert res.ok and res.done == 3, [f.reason for f in res.failures]
    a = load(tmp_path / "o" / "plain.wav", HIFIGAN.sample_rate)
    for name in ("batch", "grad"):
        np.testing.assert_array_equal(load(tmp_path / "o" / f"{name}.wav", HIFIGAN.sample_rate), a)


def test_a_deleted_shard_points_to_the_command_that_made_it(tmp_path, recordings):
    """It said 'run pipeline extract --with-mag first', which then failed: 'extracted without
    --with-mag'. Now the same extract redoes the shard and phase runs."""
    store = tmp_path / "s.zarr"
    assert extract(recordings, store, CFG, shard_seconds=4.0, progress=False).ok
    shutil.rmtree(store / "shards" / "00001")
    with pytest.raises(ValueError, match="`pipeline extract` again") as exc:
        phase(store, tmp_path / "wav", n_iter=2, progress=False)
    assert "--with-mag" not in str(exc.value)
    assert extract(recordings, store, CFG, shard_seconds=4.0, progress=False).done >= 1
    assert phase(store, tmp_path / "wav", n_iter=2, progress=False).done == 3


def test_another_shard_seconds_is_named(tmp_path, recordings):
    store = tmp_path / "s.zarr"
    assert extract(recordings, store, CFG, shard_seconds=4.0, progress=False).ok
    with pytest.raises(StoreError, match="--shard-seconds 4, not 60"):
        extract(recordings, store, CFG, progress=False)
    (recordings / "extra.wav").write_bytes((recordings / next(iter(
        sorted(p.name for p in recordings.glob("*.wav"))))).read_bytes())
    with pytest.raises(StoreError, match="1 utterance\\(s\\) not in it \\(extra\\)"):
        extract(recordings, store, CFG, shard_seconds=4.0, progress=False)


def test_two_files_with_one_id_fail_alone(tmp_path, recordings):
    """x.wav + x.flac in one folder aborted the run, saying 'pass a folder' when a folder was
    passed; now both fail, in words, and the rest is extracted (exit 1)."""
    first = sorted(recordings.glob("*.wav"))[0]
    y, sr = sf.read(str(first))
    sf.write(str(first.with_suffix(".flac")), y, sr)
    res = extract(recordings, tmp_path / "s.zarr", CFG, progress=False)
    assert res.done == 2 and len(res.failures) == 2
    assert all("both would write" in f.reason and "rename one" in f.reason for f in res.failures)


def test_score_inputs_sharing_no_id_are_an_input_error(tmp_path, recordings):
    """'18 utterances scored', an all-NaN summary, exit 1: now exit 2 with an id of each side."""
    hyp = tmp_path / "hyp"
    hyp.mkdir()
    for p in recordings.glob("*.wav"):
        shutil.copy(p, hyp / f"rec-{p.name}")
    with pytest.raises(InputError, match="share no utterance id"):
        score(hyp, tmp_path / "r.csv", recordings, ["stoi"], progress=False)
    r = cli("score", "--ref", recordings, "--hyp", hyp, "--out", tmp_path / "r.csv", "-q")
    assert r.returncode == 2 and "rec-" in r.stderr


def test_a_delayed_hypothesis_is_flagged_or_aligned(tmp_path, recordings):
    """A hypothesis 40 ms late passed the length tolerance and scored STOI 0.39 (0.985
    aligned). Now flagged with its lag, or with --align shifted into place and reported."""
    hyp = tmp_path / "hyp"
    hyp.mkdir()
    for p in recordings.glob("*.wav"):
        y, sr = sf.read(str(p), dtype="float32")
        sf.write(str(hyp / p.name), np.concatenate([np.zeros(int(0.04 * sr), np.float32), y])[:len(y)],
                 sr, subtype="PCM_16")
    flagged = score(hyp, tmp_path / "a.csv", recordings, ["stoi"], progress=False)
    assert all("late by 40 ms" in r["error"] and np.isnan(r["stoi"]) for r in flagged.rows)
    aligned = score(hyp, tmp_path / "b.csv", recordings, ["stoi"], progress=False, align=True)
    assert all(r["error"] == "" and r["stoi"] > 0.95 and r["lag_ms"] == 40.0 for r in aligned.rows)
    same = score(recordings, tmp_path / "c.csv", recordings, ["stoi"], progress=False)
    assert all(r["lag_ms"] == 0.0 and r["stoi"] > 0.99 for r in same.rows)


def test_wideband_pesq_is_undefined_at_8k_and_dnsmos_needs_no_reference(tmp_path, recordings):
    ref8, hyp = tmp_path / "ref8", tmp_path / "hyp"
    ref8.mkdir()
    hyp.mkdir()
    for p in sorted(recordings.glob("*.wav"))[:2]:
        y = load(p, 8000)
        sf.write(str(ref8 / p.name), y, 8000, subtype="PCM_16")
        shutil.copy(p, hyp / p.name)
    shutil.copy(sorted(recordings.glob("*.wav"))[2], hyp / "orphan.wav")
    res = score(hyp, tmp_path / "r.csv", ref8, ["pesq_wb", "pesq_nb", "dnsmos_ovrl"],
                progress=False)
    rows = {r["id"]: r for r in res.rows}
    for uid in (p.stem for p in ref8.glob("*.wav")):
        assert np.isnan(rows[uid]["pesq_wb"]) and "use pesq_nb" in rows[uid]["error"]
        assert 1.0 < rows[uid]["pesq_nb"] < 4.6
    assert 1.0 < rows["orphan"]["dnsmos_ovrl"] < 5.0                # no reference, still scored
    assert "pesq_wb: no reference" in rows["orphan"]["error"]


@pytest.mark.unit
def test_version_usage_and_plot_flags(tmp_path):
    from pipeline import __version__
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"pipeline {__version__}"
    assert "{STORE}" in cli("info", "--help").stdout
    helptext = cli("score", "--help").stdout
    assert "--plot" in helptext and "--no-plot" in helptext and "--align" in helptext


@pytest.mark.unit
def test_cluster_profile_by_file_name_and_predict_of_a_mel(tmp_path):
    r = cli("cluster", "script", "--profile", "cluster-example.toml")
    assert r.returncode == 0 and "#SBATCH" in r.stdout
    assert cli("cluster", "script", "--profile", "cluster-example").returncode == 0
    np.save(tmp_path / "x.npy", np.zeros((80, 100), np.float32))
    r = cli("predict", tmp_path / "x.npy", "--out", tmp_path / "o")
    assert r.returncode == 2 and "pipeline vocode" in r.stderr


def test_workers_beyond_the_cores_say_so_and_warnings_stay_quiet(tmp_path, recordings):
    r = cli("extract", recordings, "--out", tmp_path / "s.zarr", "--workers", "999", "-q")
    assert r.returncode == 0 and "--workers 999" in r.stderr and "one per core" in r.stderr
    y = load(sorted(recordings.glob("*.wav"))[0], 16000)
    cfg = load_config("torchaudio-16k")                 # librosa warns of its empty filters
    d = tmp_path / "m"
    d.mkdir()
    np.save(d / "a.npy", utterance_features([y], cfg)[1][0].T)
    r = cli("vocode", d, "--out", tmp_path / "o", "--preset", "torchaudio-16k", "--iters", "2",
            "-q")
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr and "warn" not in r.stderr.lower()


def test_score_summary_units(tmp_path, recordings):
    res = score(recordings, tmp_path / "r.csv", recordings, ["stoi"], progress=False)
    with (tmp_path / "r.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:5] == ["id", "ref", "hyp", "duration_s", "lag_ms"]
    assert "| stoi | 0-1 |" in res.markdown

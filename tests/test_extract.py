"""Extraction: exact agreement with librosa, resume after a crash, bad files recorded."""
import csv

import librosa
import numpy as np
import pytest
import soundfile as sf
from conftest import assert_same_store

from pipeline.config import load_config
from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.stages import extract as extract_mod
from pipeline.stages.extract import extract


def librosa_mel(y, cfg):
    if not cfg.center:   # HiFi-GAN framing: reflect pad (n_fft-hop)/2, no centring
        p = (cfg.n_fft - cfg.hop_length) // 2
        y = np.pad(y, (p, p), mode=cfg.pad_mode)
    return librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.win_length, center=cfg.center, pad_mode=cfg.pad_mode, power=cfg.power,
        n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, htk=cfg.mel_scale == "htk",
        norm="slaney" if cfg.norm == "slaney" else None)


@pytest.mark.parametrize("preset", ["mel80-16k", "mel250-16k", "hifigan-22k"])
def test_store_mel_equals_librosa(tmp_path, corpus_manifest, corpus, preset):
    """Tolerance: linear mel within 1e-4 relative + 1e-6 absolute of librosa (float32 FFTs)."""
    cfg = load_config(preset)
    out = tmp_path / "s.zarr"
    res = extract(corpus_manifest, out, cfg, shard_seconds=15.0, progress=False)
    assert res.ok and res.done == len(corpus)
    store = Store(out)
    by_id = {u.id: u for u in corpus}
    seen = 0
    for entry, mel in store.iter_utterances("mel"):
        y = load(by_id[entry.id].path, cfg.sample_rate)
        ref = librosa_mel(y, cfg)                            # [M, T]
        assert mel.shape == ref.T.shape, entry.id
        ours = np.exp(mel.T)
        ref_c = np.maximum(ref, cfg.clamp)
        np.testing.assert_allclose(ours, ref_c, rtol=1e-4, atol=1e-6, err_msg=entry.id)
        seen += 1
    assert seen == len(corpus)


def test_true_magnitude_matches_librosa_stft(store80, corpus):
    store = Store(store80)
    by_id = {u.id: u for u in corpus}
    entry, mag = next(store.iter_utterances("mag_true"))
    y = load(by_id[entry.id].path, 16000)
    ref = np.abs(librosa.stft(y, n_fft=1024, hop_length=256, center=True, pad_mode="constant"))
    np.testing.assert_allclose(mag.T, ref, rtol=1e-4, atol=2e-5)


def test_crash_then_resume_gives_identical_store(tmp_path, corpus_manifest, monkeypatch):
    cfg = load_config("mel80-16k")
    ref = tmp_path / "ref.zarr"
    assert extract(corpus_manifest, ref, cfg, with_mag=True, shard_seconds=8.0, progress=False).ok
    n_shards = len(Store(ref).shard_names())
    assert n_shards >= 4

    # A worker dies while writing its third shard: after its arrays, before its marker.
    real = extract_mod.compute_features
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise MemoryError("simulated worker death")
        return real(*a, **k)

    monkeypatch.setattr(extract_mod, "compute_features", dying)
    out = tmp_path / "run.zarr"
    first = extract(corpus_manifest, out, cfg, with_mag=True, shard_seconds=8.0, progress=False)
    assert not first.ok and all("simulated worker death" in f.reason for f in first.failures)
    assert len(Store(out).incomplete()) == 1
    monkeypatch.setattr(extract_mod, "compute_features", real)

    second = extract(corpus_manifest, out, cfg, with_mag=True, shard_seconds=8.0, progress=False)
    assert second.ok and second.skipped_shards == n_shards - 1
    assert_same_store(ref, out)
    assert not (tmp_path / "run.failures.csv").exists()


def test_bad_files_are_recorded_and_skipped(tmp_path, wav_corpus):
    d = tmp_path / "corpus"
    d.mkdir()
    for u in wav_corpus[:3]:
        (d / (u.id.replace("/", "_") + ".wav")).write_bytes(open(u.path, "rb").read())
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("this is not audio\n" * 100)
    sf.write(d / "tiny.wav", np.full(100, 0.1, np.float32), 16000)
    out = tmp_path / "s.zarr"
    res = extract(d, out, load_config("mel80-16k"), progress=False)
    assert res.done == 3
    rows = list(csv.DictReader(open(tmp_path / "s.failures.csv")))
    reasons = {r["id"]: r["reason"] for r in rows}
    assert set(reasons) == {"corrupt", "empty", "text", "tiny"}
    assert "empty file" in reasons["empty"]
    assert "too short" in reasons["tiny"]
    assert all(str(d) in r for r in reasons.values())
    assert len(Store(out).all_entries()) == 3


def test_config_mismatch_is_refused_naming_the_field(tmp_path, corpus_manifest):
    from pipeline.config import ConfigError
    out = tmp_path / "s.zarr"
    extract(corpus_manifest, out, load_config("mel80-16k"), progress=False)
    with pytest.raises(ConfigError, match="n_mels: 80 != 250"):
        extract(corpus_manifest, out, load_config("mel250-16k"), progress=False)


@pytest.mark.slow
def test_two_dask_workers_write_the_same_store(tmp_path, corpus_manifest):
    cfg = load_config("mel80-16k")
    one, two = tmp_path / "one.zarr", tmp_path / "two.zarr"
    assert extract(corpus_manifest, one, cfg, shard_seconds=10.0, progress=False).ok
    assert extract(corpus_manifest, two, cfg, shard_seconds=10.0, workers=2, progress=False).ok
    assert len(Store(one).shard_names()) >= 4
    assert_same_store(one, two)


def test_store_without_magnitudes_is_smaller_than_the_audio(tmp_path, corpus_manifest, corpus):
    """The default route's store (the mel only: `phase` inverts in memory) takes less room
    than the 16-bit PCM of its audio (80 float32 mels per 256 samples: 0.625x before zarr's
    compression)."""
    out = tmp_path / "s.zarr"
    assert extract(corpus_manifest, out, load_config("mel80-16k"), progress=False).ok
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    pcm = 2 * sum(e.n_samples for e in Store(out).all_entries())
    assert size <= 0.7 * pcm, (size, pcm)


def test_filterbank_cache_is_librosas_filterbank(tmp_path, monkeypatch):
    """The filterbank kept on disk (to spare later processes librosa's import) is exactly
    librosa's; an unwritable cache only means computing it each time."""
    from pipeline.dsp import mel as M

    cfg = load_config("hifigan-22k")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    M._filterbank_np.cache_clear()
    first = M._filterbank_np(cfg)
    assert list((tmp_path / "cache" / "pipeline").glob("melfb-*.npy"))
    M._filterbank_np.cache_clear()
    again = M._filterbank_np(cfg)
    ref = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000, dtype=np.float32)
    np.testing.assert_array_equal(first, ref)
    np.testing.assert_array_equal(again, ref)
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/nope")
    M._filterbank_np.cache_clear()
    np.testing.assert_array_equal(M._filterbank_np(cfg), ref)
    M._filterbank_np.cache_clear()


def test_plan_kept_apart_and_schema_1_stores_still_read(tmp_path, corpus_manifest):
    """Every worker task opens the store: its root holds no per-utterance list (at 11 h the
    plan was 2.3 MB of JSON read by each task). Stores of schema 1 (plan in the root's attrs)
    still open, resume and list their shards."""
    import json
    import shutil
    cfg = load_config("mel80-16k")
    out = tmp_path / "s.zarr"
    assert extract(corpus_manifest, out, cfg, shard_seconds=10.0, progress=False).ok
    root = json.loads((out / "zarr.json").read_text())["attributes"]
    assert "plan" not in root and root["schema_version"] == 2
    store = Store(out)
    plan, names = store.plan, store.shard_names()
    assert len(names) == root["n_shards"] == len(plan) >= 4
    # the same store as schema 1 wrote it
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"].update(plan=plan, schema_version=1)
    del meta["attributes"]["n_shards"]
    (out / "zarr.json").write_text(json.dumps(meta))
    shutil.rmtree(out / "plan")
    old = Store(out)
    assert old.plan == plan and old.shard_names() == names
    assert extract(corpus_manifest, out, cfg, shard_seconds=10.0, progress=False).skipped_shards == len(names)

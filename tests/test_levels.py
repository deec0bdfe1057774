"""Levels and conventions that used to give wrong audio with exit status 0: normalised TTS
features vocoded as log-mels, clipping nobody reported, round trips computed before the
16-bit write (each test failed before its fix). Real speech from the test corpus."""
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import load_config
from pipeline.dsp.mel import utterance_features
from pipeline.io.audio import file_level, load
from pipeline.stages.extract import extract
from pipeline.stages.phase import phase
from pipeline.stages.vocode import MelError, load_stats, vocode

ESPNET = load_config("espnet-22k")
HIFIGAN = load_config("hifigan-22k")


@pytest.fixture(scope="module")
def espnet_mels(wav_corpus):
    """Three utterances' mels in ESPnet's convention, and ESPnet's GlobalMVN statistics of
    them as its `feats_stats.npz` stores them (count, sum, sum_square)."""
    ys = [load(u.path, ESPNET.sample_rate) for u in wav_corpus[:3]]
    mels = utterance_features(ys, ESPNET)[1]
    allm = np.concatenate(mels).astype(np.float64)
    stats = {"count": np.array(len(allm)), "sum": allm.sum(0), "sum_square": (allm ** 2).sum(0)}
    return mels, stats


def write_mels(folder: Path, mels: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(mels):
        np.save(folder / f"utt{i}.npy", m.T)                       # (n_mels, T)
    return folder


def rows(report: Path) -> list[dict]:
    with report.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_normalised_features_are_refused_then_denormalised_with_their_stats(tmp_path, espnet_mels):
    """ESPnet global_mvn features under --preset espnet-22k were vocoded (64 % of samples
    clipped); now refused with the hint, and with --stats vocoded as the mels they stand for."""
    mels, stats = espnet_mels
    np.savez(tmp_path / "feats_stats.npz", **stats)
    st = load_stats(tmp_path / "feats_stats.npz", ESPNET.n_mels)
    mean, std = np.array(st.mean, np.float32), np.array(st.std, np.float32)
    norm = write_mels(tmp_path / "norm", [(m - mean) / std for m in mels])
    res = vocode(norm, tmp_path / "refused", ESPNET, n_iter=4, progress=False)
    assert res.done == 0 and len(res.failures) == 3
    assert all("mean-variance normalised" in f.reason and "--stats" in f.reason
               for f in res.failures)
    res = vocode(norm, tmp_path / "denorm", ESPNET, n_iter=4, progress=False,
                 stats=tmp_path / "feats_stats.npz")
    assert res.ok and res.done == 3 and not res.clipped
    plain = write_mels(tmp_path / "plain", [st.denormalise((m - mean) / std) for m in mels])
    assert vocode(plain, tmp_path / "plain-out", ESPNET, n_iter=4, progress=False).done == 3
    for i in range(3):
        a = load(tmp_path / "denorm" / f"utt{i}.wav", ESPNET.sample_rate)
        b = load(tmp_path / "plain-out" / f"utt{i}.wav", ESPNET.sample_rate)
        np.testing.assert_array_equal(a, b)
    assert np.mean([float(r["roundtrip_mel_l1"]) for r in rows(res.report)]) < 0.3


def test_tacotron_symmetric_mels_are_refused(tmp_path, wav_corpus):
    """Mels scaled to +-4 (Tacotron's symmetric normalisation, clipped) under hifigan-22k were
    vocoded with 23 % of samples clipped; they pile up at -4, which is not ln's floor."""
    ys = [load(u.path, HIFIGAN.sample_rate) for u in wav_corpus[:2]]
    mels = []
    for m in utterance_features(ys, HIFIGAN)[1]:
        db = 20 * np.log10(np.maximum(np.exp(m), 1e-5)) - 20
        mels.append(np.clip(8 * (db + 100) / 100 - 4, -4, 4).astype(np.float32))
    res = vocode(write_mels(tmp_path / "taco", mels), tmp_path / "out", HIFIGAN, n_iter=4,
                 progress=False)
    assert res.done == 0 and all("not this convention's floor" in f.reason for f in res.failures)


def test_real_mels_of_every_level_are_not_taken_for_normalised(tmp_path, wav_corpus):
    """The tool's own mels vocode under their own presets, loud, normal and near-silent
    (a prompt at -68 dBFS peak was refused as 'log10 mels')."""
    y = load(wav_corpus[0].path, HIFIGAN.sample_rate)
    for preset in (HIFIGAN, ESPNET):
        levels = [y / np.abs(y).max() * 10 ** (db / 20) for db in (-1, -20, -68)]
        mels = utterance_features(levels, preset)[1]
        res = vocode(write_mels(tmp_path / preset.name, mels), tmp_path / f"o-{preset.name}",
                     preset, n_iter=2, progress=False)
        assert res.ok and res.done == 3, [f.reason for f in res.failures]


def test_clipping_is_reported_and_peak_normalises(tmp_path, wav_corpus):
    """A float wav peaking at 5.7 went through extract -> phase with 18 % of samples clipped
    and no word of it. Now the run's report lists each output's peak and clipped fraction,
    the CLI warns, and --peak -1 scales each output to -1 dBFS."""
    corpus = tmp_path / "loud"
    corpus.mkdir()
    y = load(wav_corpus[0].path, 16000)
    sf.write(corpus / "loud.wav", y / np.abs(y).max() * 5.7, 16000, subtype="FLOAT")
    sf.write(corpus / "fine.wav", load(wav_corpus[1].path, 16000), 16000, subtype="PCM_16")
    store = tmp_path / "s.zarr"
    assert extract(corpus, store, load_config("mel80-16k"), progress=False).ok
    res = phase(store, tmp_path / "wav", n_iter=20, progress=False)
    assert res.ok and res.clipped == ["loud"]
    report = {r["id"]: r for r in rows(res.report)}
    assert float(report["loud"]["clipped"]) > 0.05 and float(report["loud"]["peak_dbfs"]) > 10
    assert float(report["fine"]["clipped"]) == 0.0 and float(report["fine"]["peak_dbfs"]) < 0
    assert file_level(tmp_path / "wav" / "loud.wav").clipped > 0.05
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "phase", str(store), "--out",
                        str(tmp_path / "cli"), "--iters", "20", "-q"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "1 output(s) clipped" in r.stderr and "--peak -1" in r.stderr
    res = phase(store, tmp_path / "peak", n_iter=20, progress=False, peak_dbfs=-1.0)
    assert res.ok and not res.clipped
    for uid in ("loud", "fine"):
        lv = file_level(tmp_path / "peak" / f"{uid}.wav")
        assert lv.clipped == 0.0 and abs(lv.peak_dbfs + 1.0) < 0.01


def test_vocode_round_trip_is_measured_on_the_file_as_written(tmp_path, espnet_mels):
    """A mel 8x too loud clips on the 16-bit write; the round trip used to be computed before
    it (0.054 reported, 0.58 from the file). Now the report says so: clipped, large round
    trip; the same mel at its level round-trips closely."""
    mels, _ = espnet_mels
    loud = [m + np.log10(8.0) for m in mels[:1]]
    res = vocode(write_mels(tmp_path / "loud", loud), tmp_path / "o-loud", ESPNET, n_iter=30,
                 progress=False)
    ok = vocode(write_mels(tmp_path / "ok", mels[:1]), tmp_path / "o-ok", ESPNET, n_iter=30,
                progress=False)
    assert res.clipped == ["utt0"] and not ok.clipped
    (bad,), (good,) = rows(res.report), rows(ok.report)
    assert float(bad["clipped"]) > 0.01 and float(bad["peak_dbfs"]) > 6
    assert float(bad["roundtrip_mel_l1"]) > 2 * float(good["roundtrip_mel_l1"])


def test_stats_files_are_checked(tmp_path, espnet_mels):
    _, stats = espnet_mels
    np.savez(tmp_path / "wrong.npz", mean=stats["sum"])
    with pytest.raises(MelError, match="count, sum and sum_square"):
        load_stats(tmp_path / "wrong.npz", ESPNET.n_mels)
    np.save(tmp_path / "pwg.npy", np.stack([stats["sum"][:40], stats["sum"][:40]]))
    with pytest.raises(MelError, match="statistics of 40 features"):
        load_stats(tmp_path / "pwg.npy", ESPNET.n_mels)

"""Vocoding TTS-style mel folders: conventions, checks, round trip."""
import csv

import librosa
import numpy as np
import pytest
import torch
from pesq import pesq

from pipeline.config import load_config
from pipeline.io.audio import load
from pipeline.stages.vocode import MelError, load_mel, vocode

pytestmark = pytest.mark.slow   # the whole module: `make test` runs it, `make test-fast` not


def hifigan_mel(y: np.ndarray) -> np.ndarray:
    """HiFi-GAN meldataset.mel_spectrogram, written out independently of pipeline.mel."""
    mel_basis = torch.from_numpy(librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0,
                                                     fmax=8000)).float()
    x = torch.from_numpy(y)[None, None]
    x = torch.nn.functional.pad(x, (384, 384), mode="reflect")[0]
    spec = torch.stft(x, 1024, hop_length=256, win_length=1024, window=torch.hann_window(1024),
                      center=False, normalized=False, onesided=True, return_complex=True)
    spec = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    return torch.log(torch.clamp(torch.matmul(mel_basis, spec), min=1e-5))[0].numpy()  # [80, T]


@pytest.fixture(scope="module")
def hifigan_folder(tmp_path_factory, wav_corpus):
    d = tmp_path_factory.mktemp("tts") / "mels"
    d.mkdir()
    refs = {}
    for k, u in enumerate(wav_corpus[:5]):
        y = load(u.path, 22050)
        mel = hifigan_mel(y)
        uid = u.id.replace("/", "_")
        if k % 2:
            np.save(d / f"{uid}.npy", mel)                       # (80, T)
        else:
            torch.save(torch.from_numpy(mel)[None], d / f"{uid}.pt")   # (1, 80, T)
        refs[uid] = u.path
    return d, refs


def test_vocode_hifigan_folder_nnls(tmp_path, hifigan_folder):
    d, refs = hifigan_folder
    out = tmp_path / "wav"
    res = vocode(d, out, load_config("hifigan-22k"), method="nnls", progress=False)
    assert res.ok and res.done == len(refs)
    rows = list(csv.DictReader(open(res.report)))
    assert all(float(r["roundtrip_mel_l1"]) < 0.6 for r in rows), rows
    scores = []
    for uid, path in refs.items():
        y16 = load(path, 16000)
        o16 = load(out / f"{uid}.wav", 16000)
        n = min(len(y16), len(o16))
        assert abs(len(y16) - len(o16)) < 256 * 16000 / 22050 + 2
        scores.append(pesq(16000, y16[:n], o16[:n], "wb"))
    assert np.mean(scores) > 2.7, scores
    again = vocode(d, out, load_config("hifigan-22k"), method="nnls", progress=False)
    assert again.done == 0 and again.skipped == len(refs)


def test_bad_mels_name_file_and_fix(tmp_path, hifigan_folder):
    d, refs = hifigan_folder
    cfg = load_config("hifigan-22k")
    good = np.load(next(d.glob("*.npy")))
    cases = {
        "wrong_n_mels.npy": (good[:64], "n_mels=80"),
        "db.npy": (20 * good / np.log(10), "look like db"),
        "int16.npy": ((good * 100).astype(np.int16), "integer dtype"),
        "nan.npy": (np.where(np.arange(good.shape[1]) == 3, np.nan, good), "NaN"),
        "square.npy": (good[:, :80], "ambiguous"),
    }
    for name, (arr, msg) in cases.items():
        p = tmp_path / name
        np.save(p, arr)
        with pytest.raises(MelError, match=msg) as e:
            load_mel(p, cfg)
        assert name in str(e.value)
    for name in ("junk.npy", "junk.npz"):
        (tmp_path / name).write_text("not an array")
        with pytest.raises(MelError, match=f"{name}: not a .np[yz] file .*numpy.save"):
            load_mel(tmp_path / name, cfg)
    assert load_mel(d / next(d.glob("*.npy")).name, cfg).shape == good.T.shape


def test_bad_file_in_folder_is_skipped_and_reported(tmp_path, hifigan_folder):
    import shutil
    d, refs = hifigan_folder
    src = tmp_path / "mels"
    shutil.copytree(d, src)
    np.save(src / "broken.npy", np.zeros((64, 100), np.float32) - 3)
    res = vocode(src, tmp_path / "wav", load_config("hifigan-22k"), method="pinv", n_iter=10,
                 progress=False)
    assert res.done == len(refs) and [f.id for f in res.failures] == ["broken"]
    assert (tmp_path / "wav" / "failures.csv").exists()


def test_vocode_hifigan_folder_learned_model(tmp_path, hifigan_folder):
    """Issue 6 acceptance: HiFi-GAN-convention mels of the test corpus, learned model + FGLA
    100, PESQ-WB >= 3.0 against the originals (both at 16 kHz)."""
    d, refs = hifigan_folder
    out = tmp_path / "wav"
    res = vocode(d, out, load_config("hifigan-22k"), method="model", progress=False)
    assert res.ok and res.done == len(refs)
    scores = []
    for uid, path in refs.items():
        y16 = load(path, 16000)
        o16 = load(out / f"{uid}.wav", 16000)
        n = min(len(y16), len(o16))
        scores.append(pesq(16000, y16[:n], o16[:n], "wb"))
    print("hifigan model PESQ", np.mean(scores), scores)
    assert np.mean(scores) >= 3.0
    assert res.mel_l1_mean < 0.6


@pytest.mark.parametrize("preset", ["espnet-22k", "torchaudio-16k", "librosa-22k", "mel250-16k"])
def test_every_preset_vocodes_real_speech(tmp_path, wav_corpus, preset):
    """A mel in each convention (made by our extractor, which equals librosa's) is accepted
    by the checks and vocoded; re-extracting the output gives back a close mel."""
    from pipeline.dsp.mel import mel_spectrogram
    cfg = load_config(preset)
    y = load(wav_corpus[5].path, cfg.sample_rate)
    mel = mel_spectrogram(torch.from_numpy(y)[None], cfg)[0].numpy()       # (n_mels, T)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "u.npy", mel)
    res = vocode(tmp_path / "in", tmp_path / "out", cfg, method="nnls", n_iter=50, progress=False)
    assert res.ok and res.done == 1
    spread = float(mel.max() - mel.min())
    assert res.mel_l1_mean < 0.05 * spread, (res.mel_l1_mean, spread)

"""The unit tier: synthetic maths and plumbing checks that need no Debian package and no
speech (`make test-unit` runs them, with the other tests marked `unit`, on a machine with the
Python packages only). Synthetic signals check maths here; that speech works is the other
tests' job, on real speech."""
import json

import numpy as np
import pytest
import torch

from pipeline.algorithms.invert import nnls, pinv
from pipeline.algorithms.joint import MelTarget, project_mel
from pipeline.config import load_config
from pipeline.dsp.mel import (
    compress,
    decompress,
    filterbank,
    filterbank_pinv,
    mel_from_magnitude,
    ragged_batch,
    stft,
    utterance_features,
)
from pipeline.dsp.spectral import spectral_convergence
from pipeline.dsp.stft import FramePair
from pipeline.io.results import OutputError, claim_file, claim_output, is_csv_with, record_diff
from pipeline.synthesis import reconstruct

pytestmark = pytest.mark.unit
CFG = load_config("mel80-16k")


def chirps(seed: int = 0, n: int = 3) -> list[np.ndarray]:
    """Harmonic chirps with a noise floor, 0.5-1.2 s at 16 kHz (different lengths)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        t = np.arange(int(16000 * (0.5 + 0.35 * k))) / 16000
        f0 = 120 + 60 * t / t[-1]
        phase = 2 * np.pi * np.cumsum(f0) / 16000
        y = sum(np.sin(h * phase) / h for h in range(1, 12)) * 0.1
        out.append((y + 0.003 * rng.standard_normal(len(t))).astype(np.float32))
    return out


def test_frame_pair_is_the_stft_and_its_inverse():
    """FramePair's STFT equals dsp.mel.stft (torch.stft's framing) and its least-squares ISTFT
    gives the signal back inside each item, zeros outside it."""
    ys = chirps()
    batch, n = ragged_batch(ys, CFG)
    lengths = torch.tensor([len(y) for y in ys])
    pair = FramePair(CFG, max(n), lengths)
    spec = pair.stft(batch)
    torch.testing.assert_close(spec.transpose(1, 2), stft(batch, CFG, padded=True),
                               atol=1e-4, rtol=1e-4)
    back = pair.istft(pair.own_frames(spec))
    for y, z in zip(ys, pair.crop(back, lengths.tolist())):
        np.testing.assert_allclose(z.numpy(), y, atol=1e-5)
    assert float(back[0, pair.pad + len(ys[0]):].abs().max()) == 0.0


def test_pinv_and_nnls_fit_the_mel():
    """The filterbank's pseudo-inverse gives back the mel exactly before clipping at 0; the
    clipped estimate (``pinv``) is non-negative and NNLS fits the mel within 1e-3 (relative),
    far closer than it."""
    mags, mels = utterance_features(chirps(1), CFG)
    mel = torch.from_numpy(mels[0])[None]
    A = filterbank(CFG)
    lin = decompress(mel, CFG)[0]                                      # [T, M]
    torch.testing.assert_close(lin @ filterbank_pinv(CFG).T @ A.T, lin, atol=1e-4, rtol=1e-3)
    rel = {}
    for fn in (pinv, nnls):
        est = fn(mel, CFG)[0]
        assert (est >= 0).all()
        rel[fn.__name__] = float((est @ A.T - lin).norm() / lin.norm())
    assert rel["nnls"] < 1e-3 and rel["nnls"] < rel["pinv"] / 20, rel


def test_mel_projection_reaches_the_target_mel():
    """Three multiplicative rescalings move a wrong magnitude onto the target's mel (within 2 %
    where the mel is above its floor), and leave bins no band sees as they were."""
    mags, mels = utterance_features(chirps(2), CFG)
    true = torch.from_numpy(mags[0])[None]
    target = MelTarget.from_compressed(torch.from_numpy(mels[0])[None], CFG)
    wrong = true * torch.linspace(0.3, 3.0, true.shape[-1])
    moved = project_mel(wrong, target, steps=3)
    got = mel_from_magnitude(moved.transpose(1, 2), CFG).transpose(1, 2)
    want = torch.from_numpy(mels[0])[None]
    loud = ~target.floor
    assert float((got - want)[loud].abs().max()) < 0.02     # ln units: 2 %
    before = mel_from_magnitude(wrong.transpose(1, 2), CFG).transpose(1, 2)
    assert float((before - want)[loud].abs().mean()) > 0.3


def test_fgla_finds_a_consistent_phase():
    """FGLA from a zero phase on a consistent magnitude: the re-analysed magnitude's spectral
    convergence falls from ~0.9 to < 0.1 in 100 iterations."""
    ys = chirps(3)
    mags = utterance_features(ys, CFG)[0]
    n = [len(y) for y in ys]
    for iters, bound in ((0, 1.0), (100, 0.1)):
        out = reconstruct(mags, n, CFG, "fgla", n_iter=iters)
        again = utterance_features(out, CFG)[0]
        sc = [float(spectral_convergence(reference=torch.from_numpy(a), estimate=torch.from_numpy(b)))
              for a, b in zip(mags, again)]
        assert max(sc) < bound and (iters or min(sc) > 0.5), (iters, sc)


def test_compress_is_each_presets_log():
    x = torch.tensor([1e-7, 1e-3, 1.0, 10.0])
    for name, want in (("mel80-16k", torch.log(x.clamp_min(1e-5))),
                       ("espnet-22k", torch.log10(x.clamp_min(1e-10)))):
        cfg = load_config(name)
        torch.testing.assert_close(compress(x, cfg), want)


def test_spectral_convergence_is_a_relative_frobenius_norm():
    ref = torch.rand(2, 50, 513)
    assert torch.equal(spectral_convergence(reference=ref, estimate=ref), torch.zeros(2))
    torch.testing.assert_close(spectral_convergence(reference=ref, estimate=torch.zeros_like(ref)),
                               torch.ones(2))
    torch.testing.assert_close(spectral_convergence(reference=ref, estimate=1.5 * ref),
                               torch.full((2,), 0.5))


def test_run_records_name_the_innermost_setting_that_differs(tmp_path):
    old = {"algo": "fgla", "iters": 800, "options": {"momentum": 0.99}}
    new = {"algo": "fgla", "iters": 100, "options": {"momentum": 0.9}}
    assert record_diff(old, new) == "iters: 800 -> 100; options.momentum: 0.99 -> 0.9"
    claim_output(tmp_path, old, [])
    with pytest.raises(OutputError, match="options.momentum: 0.99 -> 0.9"):
        claim_output(tmp_path, new, [])
    assert json.loads((tmp_path / ".pipeline-run.json").read_text()) == old


def test_single_file_outputs_replace_only_their_own_kind(tmp_path):
    ours = tmp_path / "report.csv"
    ours.write_text("id,ref,hyp,duration,stoi\n")
    theirs = tmp_path / "grades.csv"
    theirs.write_text("name,grade\n")
    rec = tmp_path / "in" / "a.wav"
    rec.parent.mkdir()
    rec.write_bytes(b"RIFF")
    check = is_csv_with(["id", "ref", "hyp", "duration"])
    assert claim_file(ours, [], check, "report") == ours
    with pytest.raises(OutputError, match="not a report written by pipeline"):
        claim_file(theirs, [], check, "report")
    with pytest.raises(OutputError, match="one of the inputs"):
        claim_file(rec, [rec.parent], check, "report")
    with pytest.raises(OutputError, match="one of the inputs"):
        claim_file(tmp_path / "in" / "new.wav", [rec.parent], check, "report")


def test_long_utterances_are_framed_in_chunks_to_the_same_features(monkeypatch):
    """A long utterance's features, computed in frame chunks (memory flat in its length), are
    those of one STFT over it, bit for bit, for each preset's framing."""
    import pipeline.dsp.mel as mel_module

    ys = [np.concatenate(chirps(4, 3)), chirps(5, 1)[0]]
    for preset in ("mel80-16k", "hifigan-22k", "torchaudio-16k"):
        cfg = load_config(preset)
        monkeypatch.setattr(mel_module, "FEATURE_CHUNK_FRAMES", 37)
        chunked = utterance_features(ys, cfg)
        monkeypatch.setattr(mel_module, "FEATURE_CHUNK_FRAMES", 10 ** 9)
        whole = utterance_features(ys, cfg)
        for a, b in zip([*chunked[0], *chunked[1]], [*whole[0], *whole[1]]):
            np.testing.assert_array_equal(a, b)

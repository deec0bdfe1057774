"""Mel inversion: NNLS against librosa, pinv/NNLS properties, store round trip."""
import librosa
import numpy as np
import pytest
import torch

from pipeline.algorithms.invert import nnls, pinv
from pipeline.config import load_config
from pipeline.io.store import Store
from pipeline.stages.invert import invert


def test_nnls_matches_librosa_mel_to_stft(store80):
    """Same start (clipped pinv), same objective. librosa's L-BFGS-B stops at a residual of
    ~2e-2; ours goes below 1e-4. The two magnitudes agree to 10% spectral convergence."""
    store = Store(store80)
    cfg = store.config
    A = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80)
    for k, (entry, mel) in enumerate(store.iter_utterances("mel")):
        if k == 3:
            break
        M = np.exp(mel.T)
        ref = librosa.feature.inverse.mel_to_stft(M, sr=16000, n_fft=1024, power=1.0)
        ours = nnls(torch.from_numpy(mel)[None], cfg)[0].numpy().T
        assert (ours >= 0).all()
        resid = lambda X: np.linalg.norm(A @ X - M) / np.linalg.norm(M)
        assert resid(ours) < 1e-4 and resid(ours) <= resid(ref)
        assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 0.10, entry.id


def test_pinv_is_the_clipped_pseudo_inverse(store80):
    store = Store(store80)
    entry, mel = next(store.iter_utterances("mel"))
    A = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80)
    ref = np.maximum(np.linalg.pinv(A) @ np.exp(mel.T), 0)
    ours = pinv(torch.from_numpy(mel)[None], store.config)[0].numpy().T
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-5)


def test_invert_stage_writes_mag_and_resumes(tmp_path, store80):
    import shutil
    s = tmp_path / "s.zarr"
    shutil.copytree(store80, s)
    res = invert(s, "nnls", progress=False)
    assert res.ok and res.done == 14 and res.skipped_shards == 0
    store = Store(s)
    true = dict((e.id, m) for e, m in store.iter_utterances("mag_true"))
    sc = [np.linalg.norm(m - true[e.id]) / np.linalg.norm(true[e.id])
          for e, m in store.iter_utterances("mag")]
    assert 0.2 < np.mean(sc) < 0.45        # NNLS from 80 mels: measured 0.32
    again = invert(s, "nnls", progress=False)
    assert again.done == 0 and again.skipped_shards == len(store.shard_names())
    redo = invert(s, "pinv", progress=False)   # another method recomputes
    assert redo.done == 14


def test_model_inversion_records_weights_digest_and_redoes_on_retrain(tmp_path, store80):
    """Each shard records the weights' sha256 (with the card's refinement: the same weights
    refined give other magnitudes); a shard inverted by other weights of the same name
    (retrained), or with another refinement, is not taken as done."""
    import shutil

    from pipeline.io import weights as W
    from pipeline.models.inverter import inverter_digest
    s = tmp_path / "s.zarr"
    shutil.copytree(store80, s)
    assert invert(s, "model", progress=False).ok
    store = Store(s, "r+")
    digest = inverter_digest("invert-mel80-16k")
    assert digest == W.read_card(W.resolve("invert-mel80-16k"))["sha256"]   # no refinement
    state, card = W.load_state("invert-mel80-16k")
    card["model"]["refine"] = "lobes"
    lobed = W.save(state, card, tmp_path / "lobed.pt")
    assert inverter_digest(lobed) == W.read_card(lobed)["sha256"] + "+lobes"
    names = store.shard_names()
    assert {store.shard_attrs(n)["mag"]["weights_sha256"] for n in names} == {digest}
    group = store.shard_group(names[0])
    group.attrs["mag"] = {**group.attrs["mag"], "weights_sha256": "0" * 64}   # retrained
    again = invert(s, "model", progress=False)
    assert again.skipped_shards == len(names) - 1
    assert again.done == len(store.entries(names[0]))
    assert store.shard_attrs(names[0])["mag"]["weights_sha256"] == digest


def test_nan_mel_is_reported_not_fatal(tmp_path, store80):
    import shutil
    s = tmp_path / "s.zarr"
    shutil.copytree(store80, s)
    store = Store(s, "r+")
    name = store.shard_names()[0]
    g = store.shard_group(name)
    entry = store.entries(name)[0]
    mel = np.asarray(g["mel"][...])
    mel[entry.offset + 2, 5] = np.nan
    g["mel"][...] = mel
    res = invert(s, "pinv", progress=False)
    assert [f.id for f in res.failures] == [entry.id]
    assert "NaN" in res.failures[0].reason and str(s) in res.failures[0].reason
    assert res.done == 13


@pytest.mark.parametrize("preset", ["mel80-16k", "torchaudio-16k", "librosa-22k", "hifigan-22k"])
def test_mel_bound_holds_for_real_speech(wav_corpus, preset):
    """log_magnitude_bound (the learned model's output clamp) is never below the true
    log-magnitude of real speech, and it is tight enough to matter (median gap < 3 nepers)."""
    from pipeline.dsp.mel import compress, filterbank, log_magnitude_bound, ragged_batch, stft
    from pipeline.io.audio import load

    cfg = load_config(preset)
    ys = [load(u.path, cfg.sample_rate) for u in wav_corpus[:4]]
    batch, _ = ragged_batch(ys, cfg)
    mag = stft(batch, cfg, padded=True).abs().transpose(1, 2)          # [B, T, F]
    spec = mag if cfg.power == 1 else mag.pow(cfg.power)
    mel = compress(spec @ filterbank(cfg).T, cfg)
    bound = log_magnitude_bound(mel, cfg)
    logmag = mag.clamp_min(1e-30).log()
    # exact for the bins some band sees; for the others (DC, Nyquist, above fmax) a cap
    # against blow-ups that real speech must not exceed either
    assert (logmag <= bound + 1e-4).all()
    assert torch.isfinite(bound).all()
    assert (bound - logmag)[mag > 1e-4].median() < 3.0


def test_store_opened_for_reading_is_read_only(tmp_path, store80):
    """``Store(path)`` reads; only ``Store(path, "r+")`` (the writers) may change it."""
    import shutil
    s = tmp_path / "s.zarr"
    shutil.copytree(store80, s)
    store = Store(s)
    name = store.shard_names()[0]
    with pytest.raises(ValueError, match="read-only|read only"):
        store.shard_group(name).attrs["mag"] = {"complete": True}
    assert not store.is_complete(name, "mag") and store.is_complete(name, "extract")


@pytest.mark.unit
def test_lobe_fit_finds_the_harmonics_of_a_voiced_frame():
    """Maths of the lobe fit (synthetic frame): a harmonic comb at 137 Hz (Hann lobes, a
    falling envelope) seen only through its 80 mels: refining an estimate that knows nothing
    of the pitch (flat) puts peaks at the harmonics' bins and valleys between them; the bins
    above ``keep_hz`` are left as they were."""
    from pipeline.algorithms.lobes import LobeFit, refine_low_band
    from pipeline.dsp.mel import compress, filterbank, stft
    cfg = load_config("mel80-16k")
    t = np.arange(cfg.n_fft * 4) / cfg.sample_rate
    y = sum(np.exp(-k / 4) * np.cos(2 * np.pi * 137.0 * k * t) for k in range(1, 12))
    mag = stft(torch.tensor(y, dtype=torch.float32)[None], cfg).abs()[0].T[4:5]   # [1, F]
    mel = compress(mag @ filterbank(cfg).T, cfg)
    flat = torch.full_like(mag, float(mag[0, :40].mean()))           # knows nothing of pitch
    out = refine_low_band(flat, mel, cfg)
    kb = int(np.ceil(LobeFit().keep_hz * cfg.n_fft / cfg.sample_rate))
    assert torch.equal(out[:, kb:], flat[:, kb:])
    peaks = [int(round(137.0 * k * cfg.n_fft / cfg.sample_rate)) for k in (1, 2, 3, 4)]
    lo = out[0, :kb].numpy()
    for p in peaks:   # each harmonic stands out of the valleys beside it
        assert lo[p] > 1.5 * lo[p + 4] and lo[p] > 1.5 * lo[p - 3]


@pytest.mark.unit
def test_bad_low_band_shapes_are_refused_in_words():
    """``--lowband-*`` values that would build a net whose output misses frames or bins."""
    from pipeline.errors import UsageError
    from pipeline.models.inverter import ModelConfig, PInvConvSkip
    cfg = load_config("mel80-16k")
    for bad, words in [({"lowband_time_kernel": 2}, "odd time kernel"),
                       ({"lowband": -4}, ">= 1 channel"),
                       ({"lowband_hz": 900.0}, "upper edge"),
                       ({"lowband_hz": 9000.0}, "Nyquist")]:
        with pytest.raises(UsageError, match=words):
            PInvConvSkip(cfg, ModelConfig(**{"lowband": 8, **bad}))


@pytest.mark.unit
def test_unknown_refinement_is_refused():
    from pipeline.errors import UsageError
    from pipeline.models.inverter import ModelConfig, PInvConvSkip
    with pytest.raises(UsageError, match="refinement 'sharpen'.*'lobes'"):
        PInvConvSkip(load_config("mel80-16k"), ModelConfig(refine="sharpen"))


@pytest.mark.unit
def test_lobe_refinement_refuses_a_config_without_low_bands():
    from dataclasses import replace

    from pipeline.algorithms.lobes import refine_low_band
    from pipeline.errors import UsageError
    cfg = replace(load_config("mel80-16k"), fmin=1000.0)
    with pytest.raises(UsageError, match="needs mel bands below 750 Hz"):
        refine_low_band(torch.ones(1, 3, cfg.n_freq), torch.zeros(1, 3, cfg.n_mels), cfg)


@pytest.mark.unit
def test_bound_passes_gradient_to_the_net_only_in_training():
    """The mel bound caps the net's output. In training, where the net exceeds the cap, the
    gradient that would lower the output passes (so an overshoot can be learned away, issue
    18: hifigan-22k stuck at the cap) and the one that would raise it does not (where
    rounding puts the truth a hair above the bound it ran away: mel250-16k diverged); below
    the cap the gradient is the plain one. At inference it is the hard minimum. Same values
    either way."""
    import torch

    from pipeline.models.inverter import SCALE, ModelConfig, PInvConvSkip

    cfg = load_config("hifigan-22k")
    net = PInvConvSkip(cfg, ModelConfig(channels=8))
    mel = torch.randn(1, 16, cfg.n_mels) - 4

    def bias_grad(train: bool, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        net.train(train)
        net.zero_grad()
        out = net(mel)
        (sign * out).sum().backward()
        return net.out.bias.grad.clone(), out.detach()

    with torch.no_grad():
        net.out.bias.fill_(-10.0)  # a residual of -50 nepers: below the cap in every bin
    g, _ = bias_grad(True, 1.0)
    torch.testing.assert_close(g, torch.full((cfg.n_freq,), 16 * SCALE))   # d sum / d bias
    with torch.no_grad():
        net.out.bias.fill_(10.0)   # +50 nepers: far above the cap in every bin
    down, out_train = bias_grad(True, 1.0)     # the loss falls as the output falls: passes
    up, _ = bias_grad(True, -1.0)              # the loss falls as the output rises: blocked
    at_inference, out_eval = bias_grad(False, 1.0)
    torch.testing.assert_close(down, torch.full((cfg.n_freq,), 16 * SCALE))
    assert (up == 0).all()
    assert (at_inference == 0).all()
    torch.testing.assert_close(out_train, out_eval, rtol=0, atol=0)

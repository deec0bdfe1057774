"""Device twins: each test asserts what the code must achieve on real speech on its device, and
the CUDA twin also that it gives what the CPU gives. The CUDA half is skipped where torch sees
no GPU (here and in CI); `scripts/gpu-check.sh` runs it on one."""
import numpy as np
import pytest
import torch
from pesq import pesq

from pipeline.config import load_config
from pipeline.dsp.mel import utterance_features
from pipeline.dsp.spectral import spectral_convergence
from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.models.inverter import load_invert_model
from pipeline.stages.phase import phase
from pipeline.synthesis import invert_frames, reconstruct

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU"))]


def sc(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(spectral_convergence(reference=torch.from_numpy(reference),
                                      estimate=torch.from_numpy(estimate)))


@pytest.fixture(scope="module")
def speech(wav_corpus):
    cfg = load_config("mel80-16k")
    ys = [load(u.path, 16000) for u in wav_corpus[:3]]
    mags, mels = utterance_features(ys, cfg)
    return cfg, ys, mags, mels


@pytest.mark.parametrize("device", DEVICES)
def test_fgla_on_device(speech, device):
    """30 FGLA iterations from a zero phase bring the re-analysed magnitude within 0.15
    (spectral convergence) of the true one, from ~0.9 at the start; on CUDA, the CPU's
    samples."""
    cfg, ys, mags, _ = speech
    n = [len(y) for y in ys]
    got = reconstruct(mags, n, cfg, "fgla", n_iter=30, device=device)
    again = utterance_features(got, cfg)[0]
    assert all(sc(m, a) < 0.15 for m, a in zip(mags, again))
    if device != "cpu":
        for a, b in zip(reconstruct(mags, n, cfg, "fgla", n_iter=30, device="cpu"), got):
            np.testing.assert_allclose(a, b, atol=2e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_inverter_on_device(speech, device):
    """The shipped inverter on the device: closer to the true magnitude than the
    pseudo-inverse on every utterance; on CUDA, the CPU's log-magnitude."""
    cfg, _, mags, mels = speech
    model = load_invert_model(None, cfg, device)
    est = invert_frames(mels, cfg, "model", model=model, device=device)
    base = invert_frames(mels, cfg, "pinv", device=device)
    assert all(sc(m, e) < sc(m, b) - 0.01 for m, e, b in zip(mags, est, base))
    if device != "cpu":
        mel = torch.from_numpy(mels[0])[None]
        with torch.inference_mode():
            ref = load_invert_model(None, cfg, "cpu")(mel)
            got = model(mel.to(device)).cpu()
        torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_joint_stopping_on_device(speech, device):
    """The default route's iteration with its stopping rule (``--tol 0.03``, up to 800) on the
    device, items of one batch leaving it at their own checks: every item stops before 800
    (at 500-600 on CPU) and scores PESQ-WB > 3.4; on CUDA, within one check of the CPU's
    iterations and the CPU's PESQ within 0.05."""
    from pipeline.synthesis import AlgoOptions

    cfg, ys, _, mels = speech
    n = [len(y) for y in ys]
    start = invert_frames(mels, cfg, "pinv")

    def run(dev):
        ran: list[int] = []
        outs = reconstruct(start, n, cfg, "fgla", n_iter=800, project="mel", mels=mels,
                           options=AlgoOptions(tol=0.03), iterations=ran, device=dev,
                           batch_frames=10 ** 6)
        return ran, [pesq(16000, y, o, "wb") for y, o in zip(ys, outs)]
    ran, scores = run(device)
    assert all(k < 800 for k in ran) and min(scores) > 3.4, (ran, scores)
    if device != "cpu":
        cpu_ran, cpu_scores = run("cpu")
        assert all(abs(a - b) <= 100 for a, b in zip(ran, cpu_ran)), (ran, cpu_ran)
        assert all(abs(a - b) < 0.05 for a, b in zip(scores, cpu_scores))


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_default_route_on_device(tmp_path, store80, corpus, device):
    """The whole phase stage (mel inverted in memory, joint FGLA) on the device: real speech."""
    out = tmp_path / "wav"
    res = phase(store80, out, "fgla", n_iter=100, source="mel", device=device, progress=False)
    assert res.ok and res.done == len(corpus)
    u = corpus[0]
    assert pesq(16000, load(u.path, 16000), load(out / f"{u.id}.wav", 16000), "wb") > 3.0
    assert len(Store(store80).all_entries()) == len(corpus)

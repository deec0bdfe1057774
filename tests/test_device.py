"""Device twins: the same code on CPU and on CUDA gives the same result. The CUDA half is
skipped where torch sees no GPU (here and in CI); `scripts/gpu-check.sh` runs it on one."""
import numpy as np
import pytest
import torch
from pesq import pesq

from pipeline.config import load_config
from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.models.inverter import load_invert_model
from pipeline.stages.phase import phase
from pipeline.synthesis import reconstruct

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_fgla_on_device_matches_cpu(store80, device):
    store = Store(store80)
    name = store.shard_names()[0]
    entries = store.entries(name)[:3]
    mag = store.read_array(name, "mag_true")
    mags = [mag[e.offset:e.offset + e.n_frames] for e in entries]
    n = [e.n_samples for e in entries]
    cfg = store.config
    ref = reconstruct(mags, n, cfg, "fgla", n_iter=30, device="cpu")
    got = reconstruct(mags, n, cfg, "fgla", n_iter=30, device=device)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a, b, atol=2e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_inverter_on_device_matches_cpu(store80, device):
    store = Store(store80)
    cfg = load_config("mel80-16k")
    mel = torch.from_numpy(store.read_array(store.shard_names()[0], "mel")[:400])[None]
    with torch.inference_mode():
        ref = load_invert_model(None, cfg, "cpu")(mel)
        got = load_invert_model(None, cfg, device)(mel.to(device)).cpu()
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_default_route_on_device(tmp_path, store80, corpus, device):
    """The whole phase stage (mel inverted in memory, joint FGLA) on the device: real speech."""
    out = tmp_path / "wav"
    res = phase(store80, out, "fgla", n_iter=100, source="mel", device=device, progress=False)
    assert res.ok and res.done == len(corpus)
    u = corpus[0]
    assert pesq(16000, load(u.path, 16000), load(out / f"{u.id}.wav", 16000), "wb") > 3.0

"""Training mechanics on a tiny throwaway run (nothing here ships; the shipped weights are
trained by scripts/train-weights.sh on the training corpora only)."""
import json

import torch

from pipeline import weights as W
from pipeline.invert.model import ModelConfig
from pipeline.invert.train import TrainConfig, train_invert


def test_train_checkpoints_resumes_and_exports(tmp_path, store80):
    out = tmp_path / "tiny-run"
    tc = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=4, crop=32)
    card = train_invert(store80, store80, out, tc, ModelConfig(channels=16), progress=False)
    assert (out / "checkpoint.pt").exists() and (out / "loss_curve.png").stat().st_size > 5000
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert card["epochs_run"] == 2 and card["model"]["channels"] == 16
    # resume: a longer run continues from the checkpoint instead of starting over
    tc3 = TrainConfig(epochs=3, steps_per_epoch=2, batch_size=4, crop=32)
    card3 = train_invert(store80, store80, out, tc3, ModelConfig(channels=16), progress=False)
    hist = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [0, 1, 2] and card3["epochs_run"] == 3
    state, loaded = W.load_state(out / "tiny-run.pt")
    assert loaded["sha256"] == W.sha256(out / "tiny-run.pt")
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    for k in ("loss", "sc", "lsd_db", "corpus_sc"):
        assert k in loaded["validation"]
    # exported in float16 (half the bytes), loaded back into a float32 model
    assert loaded["stored_dtype"] == "float16"
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    from pipeline.store import Store
    model = W.load_invert_model(out / "tiny-run.pt", Store(store80).config)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.hparams.mel_bound


def test_level_augmentation_is_a_true_gain(store80):
    """The augmented mel is exactly the mel of the scaled magnitude (real speech)."""
    from pipeline.invert.train import level_augment
    from pipeline.mel import compress, filterbank
    from pipeline.store import Store

    s = Store(store80)
    cfg = s.config
    name = s.shard_names()[0]
    mel = torch.from_numpy(s.read_array(name, "mel")[:200])[None].repeat(3, 1, 1)
    mag = torch.from_numpy(s.read_array(name, "mag_true")[:200])[None].repeat(3, 1, 1)
    m2, g2 = level_augment(mel, mag, cfg, 12.0, torch.Generator().manual_seed(0))
    ratio = (g2.sum((1, 2)) / mag.sum((1, 2)))
    assert (ratio > 10 ** (-12 / 20) - 1e-4).all() and (ratio < 10 ** (12 / 20) + 1e-4).all()
    assert not torch.allclose(ratio, ratio[0].expand(3))          # a gain per crop
    torch.testing.assert_close(m2, compress(g2 @ filterbank(cfg).T, cfg), atol=2e-4, rtol=0)

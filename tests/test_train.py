"""Training mechanics on a tiny throwaway run (nothing here ships; the shipped weights are
trained by scripts/train-weights.sh on the training corpora only)."""
import dataclasses
import json

import pytest
import torch

from pipeline.io import weights as W
from pipeline.models.inverter import ModelConfig, inverter_digest, load_invert_model
from pipeline.train.invert import TrainConfig, train_invert

pytestmark = pytest.mark.slow   # the whole module: `make test` runs it, `make test-fast` not


def test_train_checkpoints_resumes_and_exports(tmp_path, store80):
    out = tmp_path / "tiny-run"
    tc = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=4, crop=32)
    card = train_invert(store80, store80, out, tc, ModelConfig(channels=16), progress=False)
    import matplotlib.image as mpimg
    curve = mpimg.imread(out / "loss_curve.png")   # the 6 x 3.5 in figure at 100 dpi, not blank
    assert (out / "checkpoint.pt").exists() and curve.shape[:2] == (350, 600)
    # the checkpoint stores every setting, defaults included: a default changed later
    # cannot pass for the value this run had
    settings = json.loads(torch.load(out / "checkpoint.pt", weights_only=True)["settings"])
    assert set(settings["train"]) == set(dataclasses.asdict(TrainConfig()))
    assert set(settings["model"]) == set(dataclasses.asdict(ModelConfig()))
    assert curve[..., :3].std() > 0.05
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert card["epochs_run"] == 2 and card["model"]["channels"] == 16
    # resume: a longer run continues from the checkpoint instead of starting over
    tc3 = TrainConfig(epochs=3, steps_per_epoch=2, batch_size=4, crop=32)
    card3 = train_invert(store80, store80, out, tc3, ModelConfig(channels=16), progress=False)
    hist = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [0, 1, 2] and card3["epochs_run"] == 3
    # a checkpoint written before options were added (--lowband ...: absent from its
    # settings) resumes with them at their defaults ...
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    old = json.loads(ck["settings"])
    for k in ("lowband", "lowband_layers", "lowband_hz", "lowband_time_kernel"):
        del old["model"][k]
    torch.save({**ck, "settings": json.dumps(old)}, out / "checkpoint.pt")
    tc4 = TrainConfig(epochs=4, steps_per_epoch=2, batch_size=4, crop=32)
    assert train_invert(store80, store80, out, tc4, ModelConfig(channels=16),
                        progress=False)["epochs_run"] == 4
    # ... and one away from its default is a different run
    with pytest.raises(ValueError, match="other settings"):
        train_invert(store80, store80, out, dataclasses.replace(tc4, over_weight=2.0),
                     ModelConfig(channels=16), progress=False)
    state, loaded = W.load_state(out / "tiny-run.pt")
    assert loaded["sha256"] == W.sha256(out / "tiny-run.pt")
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    for k in ("loss", "sc", "lsd_db", "corpus_sc"):
        assert k in loaded["validation"]
    # exported in float16 (half the bytes), loaded back into a float32 model
    assert loaded["stored_dtype"] == "float16"
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    from pipeline.io.store import Store
    model = load_invert_model(out / "tiny-run.pt", Store(store80).config)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.hparams.mel_bound


def test_keep_epochs_writes_each_epochs_loadable_weights(tmp_path, store80):
    out = tmp_path / "kept"
    tc = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=4, crop=32)
    train_invert(store80, store80, out, tc, ModelConfig(channels=16), progress=False)
    assert not (out / "epochs").exists()
    # keeping epochs is not a setting of the run: turned on at a resume, the run goes on
    card = train_invert(store80, store80, out, dataclasses.replace(tc, epochs=3),
                        ModelConfig(channels=16), progress=False, keep_epochs=True)
    hist = json.loads((out / "history.json").read_text())
    kept = sorted(p.name for p in (out / "epochs").glob("*.pt"))
    assert kept == ["kept-e001.pt", "kept-e002.pt"]   # epoch 0 ran before it was asked
    from pipeline.io.store import Store
    for name in kept:
        state, c = W.load_state(out / "epochs" / name)
        assert c["validation"] == hist[c["epoch"]]["val"] and c["model"]["channels"] == 16
        load_invert_model(out / "epochs" / name, Store(store80).config)
    # the last epoch's kept weights are its weight average (the net validated), bit for bit
    last, _ = W.load_state(out / "epochs" / "kept-e002.pt")
    ema = torch.load(out / "checkpoint.pt", weights_only=True)["ema"]
    assert all(torch.equal(v, ema["module." + k].half()) for k, v in last.items())
    assert card["epochs_run"] == 3


def test_fine_tune_starts_from_the_given_weights(tmp_path, store80):
    """``init``: the architecture is the weights' (not the ModelConfig's), training starts
    from them, the card records the start and the loss; ``refine`` is the fine-tune's."""
    tc = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=4, crop=32)
    train_invert(store80, store80, tmp_path / "base", tc, ModelConfig(channels=16), progress=False)
    base = tmp_path / "base" / "base.pt"
    ft = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=4, crop=32, lr=1e-9, ema=0,
                     over_weight=6.0, init=str(base))
    card = train_invert(store80, store80, tmp_path / "ft", ft, ModelConfig(refine="lobes"),
                        progress=False)
    assert card["model"]["channels"] == 16 and card["model"]["refine"] == "lobes"
    assert card["train"]["init"] == str(base) and card["train"]["over_weight"] == 6.0
    before, _ = W.load_state(base)
    after, _ = W.load_state(tmp_path / "ft" / "ft.pt")   # lr 1e-9: the start, to float16
    for k in before:
        torch.testing.assert_close(after[k].float(), before[k].float(), atol=1e-3, rtol=1e-3)


def test_over_weight_makes_the_log_l1_a_lower_quantile(store80):
    """``log_l1(over=k)``: over-estimates weigh k times under-estimates, the mean weight is
    1 (k = 1 is the plain L1), and the best constant guess is the 1 / (1 + k) quantile."""
    from pipeline.io.store import Store
    from pipeline.train.invert import log_l1

    s = Store(store80)
    mag = torch.from_numpy(s.read_array(s.shard_names()[0], "mag_true")[:, 20])  # bin 20, 312 Hz
    est = mag * 1.5
    plain = log_l1(est, mag)
    torch.testing.assert_close(plain, ((est + 1e-2).log() - (mag + 1e-2).log()).abs())
    torch.testing.assert_close(log_l1(est, mag, over=3.0), 1.5 * plain)      # all above
    torch.testing.assert_close(log_l1(mag / 1.5, mag, over=3.0), 0.5 * log_l1(mag / 1.5, mag))
    logs = (mag + 1e-2).log()
    cands = logs.sort().values
    for k in (1.0, 3.0):
        losses = torch.stack([log_l1(torch.full_like(mag, float(c.exp()) - 1e-2), mag, over=k).mean()
                              for c in cands])
        best = int(losses.argmin())
        assert abs(best / (len(cands) - 1) - 1 / (1 + k)) < 0.02


def test_train_degli_after_the_inverter_exports_usable_weights(tmp_path, store80):
    """A DeGLI net for the learned inverter's magnitudes: a tiny throwaway run exports weights
    whose card names the inverter (and its checksum), `phase` runs them after `invert`, and
    refuses them on true magnitudes, which they were not trained for."""
    import shutil

    import pytest

    from pipeline.models.degli import DeGLIConfig
    from pipeline.stages.invert import invert
    from pipeline.stages.phase import phase
    from pipeline.train.degli import DeGLITrainConfig, train_degli

    out = tmp_path / "degli-tiny"
    hp = DeGLIConfig(channels=4, warmup=5, magnitude="model", invert_weights="invert-mel80-16k")
    tc = DeGLITrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, max_utterances=4,
                          warmup_range=(2, 4))
    store = tmp_path / "s.zarr"
    shutil.copytree(store80, store)     # invert writes into it: leave the shared store alone
    card = train_degli(store, store, out, tc, hp, progress=False)
    assert card["model"]["magnitude"] == "model"
    assert card["invert_weights_sha256"] == inverter_digest("invert-mel80-16k")
    assert card["validation"]["loss"] <= card["validation"]["plain_gla_block_loss"] + 1e-6
    assert invert(store, "model", progress=False).ok
    res = phase(store, tmp_path / "wav", "degli", n_iter=1, weights=str(out / "degli-tiny.pt"),
                progress=False)
    assert res.ok and res.done == 14 and len(list((tmp_path / "wav").rglob("*.wav"))) == 14
    with pytest.raises(ValueError, match="--source mag"):
        phase(store, tmp_path / "wav2", "degli", n_iter=1, source="true",
              weights=str(out / "degli-tiny.pt"), progress=False)
    # magnitudes from another inverter: refused, naming the shard and what made them
    assert invert(store, "pinv", progress=False).ok
    with pytest.raises(ValueError, match="came from method 'pinv'.*invert-mel80-16k"):
        phase(store, tmp_path / "wav3", "degli", n_iter=1, weights=str(out / "degli-tiny.pt"),
              progress=False)


def test_train_degli_unrolled_chain_exports_usable_weights(tmp_path, store80):
    """Unrolled training (a chain of blocks with FGLA's momentum, loss over the chain): a tiny
    run's card records the chain, its validation loss is not above the zero-residual
    chain's (FGLA), and `phase --algo degli` runs the exported weights on true magnitudes."""
    from pipeline.models.degli import DeGLIConfig
    from pipeline.stages.phase import phase
    from pipeline.train.degli import DeGLITrainConfig, train_degli

    out = tmp_path / "degli-chain"
    hp = DeGLIConfig(channels=4, warmup=0, momentum=0.99)
    tc = DeGLITrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, max_utterances=4,
                          warmup_range=(0, 3), unroll=3)
    card = train_degli(store80, store80, out, tc, hp, progress=False)
    assert card["model"]["momentum"] == 0.99 and card["train"]["unroll"] == 3
    assert card["model"]["horizon"] == 3      # the net acts in the chain it was trained on
    v = card["validation"]
    assert "3 chained blocks" in v["what"]   # two steps may not beat FGLA: the card says so
    assert v["beats_zero_residual"] == (v["loss"] < v["plain_gla_block_loss"])
    res = phase(store80, tmp_path / "wav", "degli", n_iter=2, source="true",
                weights=str(out / "degli-chain.pt"), progress=False)
    assert res.ok and res.done == 14


def test_train_degli_resumes_to_the_uninterrupted_weights(tmp_path, store80):
    """Stopped after epoch 1 and re-run for 2 epochs, training ends with the same weights as
    one 2-epoch run (the checkpoint of the one trainer holds net, optimiser and sampling RNG); other settings
    in the same folder are refused."""
    from dataclasses import replace

    import pytest

    from pipeline.models.degli import DeGLIConfig
    from pipeline.train.degli import DeGLITrainConfig, train_degli

    hp = DeGLIConfig(channels=4, warmup=0, momentum=0.99)
    tc = DeGLITrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, max_utterances=4,
                          warmup_range=(0, 2), unroll=2, patience=5)
    whole = train_degli(store80, store80, tmp_path / "whole", tc, hp, progress=False)
    train_degli(store80, store80, tmp_path / "cut", replace(tc, epochs=1), hp, progress=False)
    assert (tmp_path / "cut" / "checkpoint.pt").exists()
    resumed = train_degli(store80, store80, tmp_path / "cut", tc, hp, progress=False)
    assert resumed["validation"] == whole["validation"]
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("whole", "cut"))
    val = [[h["val"] for h in json.loads(c["history"])] for c in (a, b)]
    assert len(val[0]) == 2 and val[0] == val[1]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # the last epoch's net
    exported = [W.load_state(tmp_path / d / f"{d}.pt")[0] for d in ("whole", "cut")]
    assert all(torch.equal(exported[0][k], exported[1][k]) for k in exported[0])
    with pytest.raises(ValueError, match="other settings"):
        train_degli(store80, store80, tmp_path / "cut", replace(tc, lr=1e-2), hp, progress=False)


def test_low_band_stage_trains_only_the_new_net_and_resumes(tmp_path, store80):
    """``--init W --lowband C``: the 2-D low-band net added to W and trained alone (W's
    weights unchanged, to float16); the card records it; a run killed after its first epoch
    resumes to the uninterrupted weights."""
    tc = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=4, crop=32)
    train_invert(store80, store80, tmp_path / "base", tc, ModelConfig(channels=16), progress=False)
    base = tmp_path / "base" / "base.pt"
    stage = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=4, crop=32, lr=1e-2, ema=0,
                        init=str(base))
    mc = ModelConfig(lowband=4, lowband_layers=2)
    card = train_invert(store80, store80, tmp_path / "lb", stage, mc, progress=False)
    assert card["model"]["lowband"] == 4 and card["model"]["channels"] == 16
    assert card["model"]["lowband_layers"] == 2
    before, _ = W.load_state(base)
    after, _ = W.load_state(tmp_path / "lb" / "lb.pt")
    assert set(after) - set(before) and all(k.startswith("low.") for k in set(after) - set(before))
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert any(after[k].abs().max() > 0 for k in after if k.startswith("low.net.6"))  # the zero-initialised last conv
    # resume: 1 epoch, then the same command for 2, gives the uninterrupted run's weights
    one = TrainConfig(**{**stage.__dict__, "epochs": 1})
    train_invert(store80, store80, tmp_path / "lb2", one, mc, progress=False)
    train_invert(store80, store80, tmp_path / "lb2", stage, mc, progress=False)
    resumed, _ = W.load_state(tmp_path / "lb2" / "lb2.pt")
    assert all(torch.equal(resumed[k], after[k]) for k in after)

"""Each metric as the field defines it, checked against the reference recipes and libraries
on real speech (the test corpus and its FGLA reconstructions)."""
import math
import os
import signal

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from reference_metrics import espnet_mcd, lsd_db_reference, nuwave_lsd

from pipeline.config import load_config
from pipeline.dsp.mel import utterance_features
from pipeline.io.audio import load
from pipeline.metrics import registry as metrics
from pipeline.stages.score import score
from pipeline.synthesis import reconstruct


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, wav_corpus):
    """(reference wav, reconstruction wav) paths: FGLA 16 iterations from the true magnitude,
    written as 16-bit PCM like every output of the pipeline."""
    root = tmp_path_factory.mktemp("metric-ref")
    cfg = load_config("mel80-16k")
    ys = [load(u.path, 16000) for u in wav_corpus[:3]]
    outs = reconstruct(utterance_features(ys, cfg)[0], [len(y) for y in ys], cfg, "fgla",
                       n_iter=16)
    out = []
    for i, (y, o) in enumerate(zip(ys, outs)):
        ref, hyp = root / f"ref{i}.wav", root / f"hyp{i}.wav"
        sf.write(ref, y, 16000, subtype="PCM_16")
        sf.write(hyp, o, 16000, subtype="PCM_16")
        out.append((ref, hyp))
    return out


@pytest.mark.slow
def test_mcd_is_espnets_recipe(pairs):
    for ref, hyp in pairs:
        want = espnet_mcd(hyp, ref)
        got = metrics.mel_cepstral_distortion(reference=load(ref, 16000),
                                              estimate=load(hyp, 16000), sample_rate=16000)
        assert abs(got - want) < 1e-3, (got, want)
        assert 0.5 < got < 5.0            # a 16-iteration FGLA: ~1.5-2.5 dB in ESPnet units
        plain = metrics.mel_cepstral_distortion_plain(reference=load(ref, 16000),
                                                      estimate=load(hyp, 16000), sample_rate=16000)
        assert plain >= got - 1e-9        # the warping path can only lower the mean distance


def test_lsd_is_nuwaves_definition_and_lsd_db_the_readmes(pairs):
    for ref, hyp in pairs:
        x, y = load(ref, 16000), load(hyp, 16000)
        got = metrics.log_spectral_distance(reference=x, estimate=y, sample_rate=16000)
        assert abs(got - nuwave_lsd(x, y)) < 1e-4
        db = metrics.log_spectral_distance_db(reference=x, estimate=y, sample_rate=16000)
        assert db == pytest.approx(lsd_db_reference(x, y, 16000), rel=1e-4)


def test_si_sdr_equals_torchmetrics(pairs):
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio as tm
    for ref, hyp in pairs:
        x, y = load(ref, 16000), load(hyp, 16000)
        want = float(tm(torch.from_numpy(y).double(), torch.from_numpy(x).double(), zero_mean=True))
        assert metrics.si_sdr(reference=x, estimate=y, sample_rate=16000) == pytest.approx(want, abs=1e-6)


@pytest.mark.unit
def test_every_metric_states_its_unit_and_the_defaults_are_registered():
    assert all(m.unit for m in metrics.METRICS.values())
    assert metrics.default_metrics(True) == ["pesq_wb", "stoi", "estoi", "si_sdr",
                                              "spectral_convergence", "lsd", "mcd"]
    assert not metrics.METRICS["dnsmos_ovrl"].intrusive and metrics.METRICS["mcd"].lower_is_better


@pytest.mark.slow
def test_dnsmos_scores_each_signal_by_content(wav_corpus):
    """Six different utterances get six scores, even when each array is freed before the
    next is made (the old cache, keyed by id(array), gave them one score); the same content
    in a new array gets the same score."""
    vals = []
    for u in wav_corpus[:6]:
        y = load(u.path, 16000)
        vals.append(metrics.dnsmos_ovrl(estimate=y, sample_rate=16000))
        del y
    assert len(set(vals)) == 6, vals
    again = load(wav_corpus[0].path, 16000).copy()
    assert metrics.dnsmos_ovrl(estimate=again, sample_rate=16000) == vals[0]


def test_spectral_metrics_stay_below_the_lower_nyquist(tmp_path, pairs):
    """A 22.05 kHz output of a 16 kHz reference is scored at 16 kHz: its LSD equals that of the
    same output resampled to 16 kHz first, not the empty 8-11 kHz band's."""
    ref, hyp = pairs[0]
    y16 = load(hyp, 16000)
    up = librosa.resample(y16, orig_sr=16000, target_sr=22050, res_type="soxr_hq")
    (tmp_path / "ref").mkdir()
    (tmp_path / "hyp").mkdir()
    sf.write(tmp_path / "ref" / "a.wav", load(ref, 16000), 16000, subtype="PCM_16")
    sf.write(tmp_path / "hyp" / "a.wav", up, 22050, subtype="PCM_16")
    res = score(tmp_path / "hyp", tmp_path / "r.csv", tmp_path / "ref", ["lsd", "mcd"],
                progress=False)
    row = res.rows[0]
    back = load(tmp_path / "hyp" / "a.wav", 16000)
    refy = load(ref, 16000)
    n = min(len(back), len(refy))
    want = metrics.log_spectral_distance(reference=refy[:n], estimate=back[:n], sample_rate=16000)
    assert row["lsd"] == pytest.approx(want, rel=1e-6)
    assert row["mcd"] < 5.0 and row["error"] == ""


def test_a_crash_in_the_pesq_library_costs_one_item(tmp_path, pairs, monkeypatch):
    """The pesq C library segfaults on some long recordings; the item that crashes gets NaN and
    the reason, every other item and metric is scored, and the CSV is written."""
    import pesq as pesq_lib

    real = pesq_lib.pesq
    ref_dir, hyp_dir = tmp_path / "ref", tmp_path / "hyp"
    for d in (ref_dir, hyp_dir):
        d.mkdir()
    for i, (ref, hyp) in enumerate(pairs):
        sf.write(ref_dir / f"u{i}.wav", load(ref, 16000), 16000, subtype="PCM_16")
        sf.write(hyp_dir / f"u{i}.wav", load(hyp, 16000), 16000, subtype="PCM_16")
    doomed = len(load(pairs[1][0], 16000))

    def crashing(fs, ref, deg, mode):
        if len(ref) == doomed:
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(fs, ref, deg, mode)

    monkeypatch.setattr(pesq_lib, "pesq", crashing)
    res = score(hyp_dir, tmp_path / "r.csv", ref_dir, ["pesq_wb", "stoi"], progress=False)
    rows = {r["id"]: r for r in res.rows}
    assert math.isnan(rows["u1"]["pesq_wb"]) and "SIGSEGV" in rows["u1"]["error"]
    assert rows["u1"]["stoi"] > 0.8
    assert rows["u0"]["pesq_wb"] > 2.5 and rows["u2"]["pesq_wb"] > 2.5
    assert (tmp_path / "r.csv").exists() and res.failures == 1


@pytest.mark.slow
def test_long_items_are_scored_in_segments_close_to_whole(wav_corpus):
    """STOI/ESTOI of items over a minute are length-weighted means of 60 s segments (pystoi's
    whole-item arrays took 3.7 GB for 20 minutes); on 150 s of real speech the value stays
    within 0.005 of pystoi's on the whole item."""
    from pystoi import stoi as pystoi
    y = np.concatenate([load(u.path, 16000) for u in wav_corpus])
    y = np.tile(y, 5)[:150 * 16000]
    x = (y + 0.01 * np.random.default_rng(0).standard_normal(len(y))).astype(np.float32)
    assert metrics._segments(len(y), 60 * 16000) == [(0, 960000), (960000, 1920000),
                                                     (1920000, 2400000)]
    for extended, fn in ((False, metrics.stoi), (True, metrics.estoi)):
        whole = pystoi(y, x, 16000, extended=extended)
        assert abs(fn(reference=y, estimate=x, sample_rate=16000) - whole) < 0.005

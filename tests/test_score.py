"""Scoring: exact agreement with pesq/pystoi, NaN + reason for undefined items."""
import csv
import math

import numpy as np
import pytest
import soundfile as sf
from pesq import pesq
from pystoi import stoi

from pipeline.io.audio import load
from pipeline.stages.score import score


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory, wav_corpus):
    root = tmp_path_factory.mktemp("score")
    ref, hyp = root / "ref", root / "hyp"
    rng = np.random.default_rng(0)
    for u in wav_corpus[:4]:
        y, sr = sf.read(u.path, dtype="float32")
        (ref / u.id).parent.mkdir(parents=True, exist_ok=True)
        sf.write(ref / f"{u.id}.wav", y, sr)
        noisy = y + 0.01 * rng.standard_normal(len(y)).astype(np.float32)
        (hyp / u.id).parent.mkdir(parents=True, exist_ok=True)
        sf.write(hyp / f"{u.id}.wav", noisy, sr)
    return ref, hyp, [u.id for u in wav_corpus[:4]]


def test_values_equal_direct_calls(tmp_path, pair_dirs):
    ref, hyp, ids = pair_dirs
    res = score(hyp, tmp_path / "r.csv", ref, ["pesq_wb", "pesq_nb", "stoi", "estoi"], progress=False)
    rows = {r["id"]: r for r in res.rows}
    for uid in ids:
        y = load(ref / f"{uid}.wav", 16000)
        x = load(hyp / f"{uid}.wav", 16000)
        assert rows[uid]["pesq_wb"] == pesq(16000, y, x, "wb")
        assert rows[uid]["pesq_nb"] == pesq(16000, y, x, "nb")
        # pystoi itself differs by 1 ulp between identical calls (threaded BLAS reductions):
        # measured 0.9069400657841789 vs ...790 for the same arrays; hence 1e-12, not ==.
        assert rows[uid]["stoi"] == pytest.approx(stoi(y, x, 16000, extended=False), rel=1e-12)
        assert rows[uid]["estoi"] == pytest.approx(stoi(y, x, 16000, extended=True), rel=1e-12)
        assert rows[uid]["error"] == ""
    summary = list(csv.DictReader(open(tmp_path / "r.summary.csv")))
    assert [s["metric"] for s in summary] == ["pesq_wb", "pesq_nb", "stoi", "estoi"]
    assert float(summary[0]["mean"]) == pytest.approx(np.mean([rows[i]["pesq_wb"] for i in ids]), 1e-5)


def test_silent_missing_and_mismatched_items(tmp_path, pair_dirs):
    import shutil
    ref, hyp0, ids = pair_dirs
    hyp = tmp_path / "hyp"
    shutil.copytree(hyp0, hyp)
    n = len(load(ref / f"{ids[0]}.wav", 16000))
    sf.write(hyp / f"{ids[0]}.wav", np.zeros(n, np.float32), 16000)        # silent
    (hyp / f"{ids[1]}.wav").unlink()                                        # missing
    y = load(hyp / f"{ids[2]}.wav", 16000)
    sf.write(hyp / f"{ids[2]}.wav", y[: len(y) // 2], 16000)                # too short
    res = score(hyp, tmp_path / "r.csv", ref, ["pesq_wb", "stoi", "si_sdr"], progress=False)
    rows = {r["id"]: r for r in res.rows}
    assert math.isnan(rows[ids[0]]["pesq_wb"]) and "estimate is silent" in rows[ids[0]]["error"]
    assert math.isnan(rows[ids[0]]["si_sdr"])
    assert math.isnan(rows[ids[1]]["pesq_wb"]) and "missing hyp" in rows[ids[1]]["error"]
    assert math.isnan(rows[ids[2]]["stoi"]) and "length mismatch" in rows[ids[2]]["error"]
    assert rows[ids[3]]["error"] == "" and rows[ids[3]]["pesq_wb"] > 2.0
    s = {x["metric"]: x for x in res.summary}
    assert s["pesq_wb"]["count"] == 1 and s["pesq_wb"]["failures"] == 3
    assert res.failures == 3
    text = (tmp_path / "r.csv").read_text()
    assert "nan" in text and ",0.0," not in text


@pytest.mark.slow
def test_dnsmos_without_reference(tmp_path, pair_dirs):
    """Non-intrusive: each file scored alone, the value speechmos itself gives, and noise
    added at 0 dB SNR lowers every utterance's overall and background scores."""
    from speechmos import dnsmos

    ref, hyp, ids = pair_dirs
    res = score(ref, tmp_path / "d.csv", None, ["dnsmos_ovrl", "dnsmos_bak"], progress=False)
    rows = {r["id"]: r for r in res.rows}
    rng = np.random.default_rng(1)
    loud = tmp_path / "loud"
    for uid in ids:
        y = load(ref / f"{uid}.wav", 16000)
        direct = dnsmos.run(y, sr=16000)
        assert rows[uid]["dnsmos_ovrl"] == pytest.approx(direct["ovrl_mos"], abs=1e-6)
        noise = rng.standard_normal(len(y)).astype(np.float32) * np.sqrt(np.mean(y ** 2))
        (loud / uid).parent.mkdir(parents=True, exist_ok=True)
        sf.write(loud / f"{uid}.wav", (y + noise) / 2, 16000)
    noisy = {r["id"]: r for r in score(loud, tmp_path / "n.csv", None, ["dnsmos_ovrl", "dnsmos_bak"],
                                       progress=False).rows}
    for uid in ids:
        assert noisy[uid]["dnsmos_ovrl"] < rows[uid]["dnsmos_ovrl"] - 0.3, (uid, noisy[uid], rows[uid])
        assert noisy[uid]["dnsmos_bak"] < rows[uid]["dnsmos_bak"] - 0.5


@pytest.mark.slow
def test_plots_are_written(tmp_path, pair_dirs):
    ref, hyp, ids = pair_dirs
    res = score(hyp, tmp_path / "r.csv", ref, ["pesq_wb", "lsd"], progress=False, plot=True)
    names = sorted(p.name for p in res.plots)
    assert "hist_pesq_wb.png" in names and any(n.startswith("worst_") for n in names)
    import matplotlib.image as mpimg
    for p in res.plots:                     # real figures: sized as drawn, not blank
        img = mpimg.imread(p)
        assert img.shape[0] >= 250 and img.shape[1] >= 400 and img[..., :3].std() > 0.05, p

"""Hostile input: each case gives a clear message naming the item, and nothing else is lost."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.config import load_config
from pipeline.io import weights as W
from pipeline.io.store import Store, StoreError
from pipeline.models.inverter import load_invert_model
from pipeline.stages.extract import extract
from pipeline.stages.invert import invert
from pipeline.stages.phase import phase
from pipeline.stages.score import score


@pytest.fixture()
def messy_corpus(tmp_path, wav_corpus):
    d = tmp_path / "my corpus ünïcode"
    (d / "sub dir").mkdir(parents=True)
    for u in wav_corpus[:2]:
        shutil.copy(u.path, d / "sub dir" / f"été {u.id.split('/')[-1]}.wav")
    shutil.copy(wav_corpus[2].path, d / "日本語 file.wav")
    (d / "header.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 8)
    (d / "zero.wav").write_bytes(b"")
    (d / "looks_like_file.wav").mkdir()
    sf.write(d / "silence.wav", np.zeros(16000, np.float32), 16000)
    return d


def test_messy_folder_end_to_end(tmp_path, messy_corpus):
    store = tmp_path / "out dir" / "s t.zarr"
    res = extract(messy_corpus, store, load_config("mel80-16k"), progress=False)
    reasons = {f.id: f.reason for f in res.failures}
    assert set(reasons) == {"header", "zero", "looks_like_file"}
    assert "is a directory" in reasons["looks_like_file"]
    assert "empty file" in reasons["zero"]
    assert all(str(messy_corpus) in r for r in reasons.values())
    ids = sorted(e.id for e in Store(store).all_entries())
    assert "日本語 file" in ids and "silence" in ids and len(ids) == 4
    assert invert(store, "pinv", progress=False).ok
    wavs = tmp_path / "wavs ü"
    ph = phase(store, wavs, "fgla", n_iter=20, progress=False)
    assert ph.ok and (wavs / "sub dir").is_dir()
    sc = score(wavs, tmp_path / "r.csv", store, ["pesq_wb", "stoi"], progress=False)
    rows = {r["id"]: r for r in sc.rows}
    assert "silent" in rows["silence"]["error"] and np.isnan(rows["silence"]["pesq_wb"])
    assert rows["日本語 file"]["pesq_wb"] > 2.0


@pytest.mark.slow
def test_cli_exit_codes_and_messages(tmp_path, messy_corpus):
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "extract", str(messy_corpus),
                        "--out", str(tmp_path / "s.zarr"), "-q"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "3 item(s) failed" in r.stderr and "failures.csv" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "invert", str(tmp_path / "nope.zarr")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a pipeline store" in r.stderr


def test_truncated_zarr_chunk_is_reported(tmp_path, store80):
    s = tmp_path / "s.zarr"
    shutil.copytree(store80, s)
    store = Store(s)
    victim = store.shard_names()[1]
    chunk = next(p for p in (s / "shards" / victim / "mel").rglob("*") if p.is_file()
                 and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:10])
    with pytest.raises(StoreError, match=f"shard {victim}/mel is damaged"):
        store.read_array(victim, "mel")
    res = invert(s, "pinv", progress=False)
    bad = {f.id for f in res.failures}
    assert bad == {e.id for e in store.entries(victim)}
    assert all("damaged" in f.reason for f in res.failures)
    assert res.done == 14 - len(bad)           # the other shards are inverted


@pytest.mark.unit
def test_weights_bad_checksum_and_pickle(tmp_path):
    from pipeline.config import AudioConfig
    from pipeline.models.inverter import PInvConvSkip
    cfg = AudioConfig()
    m = PInvConvSkip(cfg)
    path = W.save(m.state_dict(), m.card(), tmp_path / "w.pt")
    model = load_invert_model(path, cfg)
    assert not model.training
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(W.WeightsError, match="checksum mismatch"):
        load_invert_model(path, cfg)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"state": Evil()}, evil)
    card = json.loads(path.with_suffix(".json").read_text())
    card["sha256"] = W.sha256(evil)
    evil.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(W.WeightsError, match="weights_only"):
        load_invert_model(evil, cfg)
    with pytest.raises(W.WeightsError, match="n_mels: 80 != 250"):
        load_invert_model(W.save(m.state_dict(), m.card(), tmp_path / "ok.pt"),
                            load_config("mel250-16k"))
    with pytest.raises(W.WeightsError, match="weights '.*nope.pt' not found: give a .pt path or "
                       "one of .*invert-mel80-16k"):
        load_invert_model(tmp_path / "nope.pt", cfg)   # a typo: said as such, not "card missing"


@pytest.mark.unit
def test_shared_model_is_loaded_once_and_again_when_replaced(tmp_path):
    """Shard tasks reuse the inverter a process loaded (each loaded it again: 67 ms a shard);
    weights re-exported to the same path are loaded anew, a missing file still says so."""
    import os

    from pipeline.config import AudioConfig
    from pipeline.models.inverter import PInvConvSkip, shared_invert_model
    cfg = AudioConfig()
    m = PInvConvSkip(cfg)
    path = W.save(m.state_dict(), m.card(), tmp_path / "w.pt")
    first = shared_invert_model(path, cfg)
    assert shared_invert_model(str(path), cfg) is first and not first.training
    with torch.no_grad():
        m.out.bias.fill_(0.5)
    W.save(m.state_dict(), m.card(), path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # a coarse clock
    again = shared_invert_model(path, cfg)
    assert again is not first and float(again.out.bias[0].detach()) == 0.5
    path.unlink()
    with pytest.raises(W.WeightsError, match="missing"):
        shared_invert_model(path, cfg)

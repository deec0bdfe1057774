"""The toolkits' files, written by the toolkits' own libraries from the test corpus's mels and
audio: ESPnet/Kaldi scp + ark (kaldiio), ParallelWaveGAN-style HDF5 dumps (h5py), lhotse
manifests (lhotse), Kaldi wav.scp; FLAC outputs and the lists written beside them."""
import json
from pathlib import Path

import h5py
import kaldiio
import numpy as np
import pytest
import soundfile as sf
from conftest import assert_same_store, copy_recordings

from pipeline.config import load_config
from pipeline.dsp.mel import utterance_features
from pipeline.io.audio import load
from pipeline.io.manifest import read_manifest
from pipeline.io.mels import load_stats
from pipeline.stages.extract import extract
from pipeline.stages.phase import phase
from pipeline.stages.run import run
from pipeline.stages.score import score
from pipeline.stages.vocode import vocode

ESPNET = load_config("espnet-22k")
CFG = load_config("mel80-16k")
ITERS = 4


@pytest.fixture(scope="module")
def tts(tmp_path_factory, wav_corpus):
    """Three utterances' mels in ESPnet's convention, normalised as ESPnet's GlobalMVN does
    (its feats_stats.npz: count, sum, sum_square), and the reference: the mels they stand for
    as plain .npy, vocoded."""
    root = tmp_path_factory.mktemp("tts")
    ys = [load(u.path, ESPNET.sample_rate) for u in wav_corpus[:3]]
    mels = utterance_features(ys, ESPNET)[1]
    allm = np.concatenate(mels).astype(np.float64)
    np.savez(root / "feats_stats.npz", count=np.array(len(allm)), sum=allm.sum(0),
             sum_square=(allm ** 2).sum(0))
    st = load_stats(root / "feats_stats.npz", ESPNET.n_mels)
    mean, std = np.array(st.mean, np.float32), np.array(st.std, np.float32)
    norm = {f"utt{i}": ((m - mean) / std).astype(np.float32) for i, m in enumerate(mels)}
    plain = root / "plain"
    plain.mkdir()
    for uid, z in norm.items():
        np.save(plain / f"{uid}.npy", st.denormalise(z))
    ref = vocode(plain, root / "ref", ESPNET, n_iter=ITERS, progress=False)
    assert ref.ok and ref.done == 3
    return root, norm, mean, std


def same_samples(a: Path, b: Path, ids) -> None:
    for uid in ids:
        np.testing.assert_array_equal(sf.read(str(a / f"{uid}.wav"), dtype="int16")[0],
                                      sf.read(str(b / f"{uid}.wav"), dtype="int16")[0])


def test_espnet_npy_scp_and_kaldi_ark_scp_with_their_stats(tmp_path, tts):
    root, norm, _, _ = tts
    npy = tmp_path / "norm"                   # ESPnet2's NpyScpWriter: utt_id path.npy
    npy.mkdir()
    lines = []
    for uid, z in norm.items():
        np.save(npy / f"{uid}.npy", z)
        lines.append(f"{uid} {npy / uid}.npy")
    (npy / "feats.scp").write_text("\n".join(lines) + "\n")
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/feats.ark,{tmp_path}/feats.scp") as w:
        for uid, z in norm.items():
            w(uid, z)
    stats = root / "feats_stats.npz"
    for src in (npy / "feats.scp", tmp_path / "feats.scp", tmp_path / "feats.ark"):
        refused = vocode(src, tmp_path / f"no-{src.name}-{src.parent.name}", ESPNET,
                         n_iter=ITERS, progress=False)
        assert refused.done == 0 and all("--stats" in f.reason for f in refused.failures)
        out = tmp_path / f"out-{src.name}-{src.parent.name}"
        res = vocode(src, out, ESPNET, n_iter=ITERS, progress=False, stats=stats)
        assert res.ok and res.done == 3, [f.reason for f in res.failures]
        same_samples(out, root / "ref", norm)


def test_parallel_wavegan_h5_dumps_with_their_stats(tmp_path, tts):
    root, norm, mean, std = tts
    dump = tmp_path / "dump"
    dump.mkdir()
    for uid, z in norm.items():               # one file per utterance, dataset "feats"
        with h5py.File(dump / f"{uid}.h5", "w") as f:
            f["feats"] = z
            f["wave"] = np.zeros(10, np.float32)
    with h5py.File(tmp_path / "stats.h5", "w") as f:
        f["mean"], f["scale"] = mean.astype(np.float64), std.astype(np.float64)
    res = vocode(dump, tmp_path / "out", ESPNET, n_iter=ITERS, progress=False,
                 stats=tmp_path / "stats.h5")
    assert res.ok and res.done == 3
    same_samples(tmp_path / "out", root / "ref", norm)
    with h5py.File(tmp_path / "all.h5", "w") as f:   # several utterances in one file
        for uid, z in norm.items():
            f[uid] = z
    res = vocode(tmp_path / "all.h5", tmp_path / "out2", ESPNET, n_iter=ITERS, progress=False,
                 stats=tmp_path / "stats.h5")
    assert res.ok and res.done == 3
    same_samples(tmp_path / "out2", root / "ref", norm)


@pytest.fixture()
def folder(tmp_path, wav_corpus):
    return copy_recordings(wav_corpus[:3], tmp_path / "corpus")


def test_run_over_a_lhotse_recording_set_and_a_wav_scp_gives_the_folders_store(tmp_path, folder):
    from lhotse import Recording, RecordingSet

    recs = RecordingSet.from_recordings(Recording.from_file(p) for p in sorted(folder.glob("*.wav")))
    recs.to_file(tmp_path / "recordings.jsonl.gz")
    (tmp_path / "wav.scp").write_text("".join(f"{p.stem} {p}\n" for p in sorted(folder.glob("*.wav"))))
    base = run(folder, tmp_path / "a", CFG, n_iter=2, progress=False)
    assert base.ok
    for src, name in ((tmp_path / "recordings.jsonl.gz", "b"), (tmp_path / "wav.scp", "c")):
        res = run(src, tmp_path / name, CFG, n_iter=2, progress=False)
        assert res.ok and res.stages["phase"].done == 3
        assert_same_store(tmp_path / "a" / "mels.zarr", tmp_path / name / "mels.zarr")
        same_samples(tmp_path / "a" / "wav", tmp_path / name / "wav",
                     [p.stem for p in folder.glob("*.wav")])


def test_lhotse_cut_supervisions_and_kaldi_segments_are_the_utterances(tmp_path, wav_corpus):
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    longest = max(wav_corpus, key=lambda u: u.duration)          # a 7 s LibriVox reading
    recs = RecordingSet.from_recordings([Recording.from_file(longest.path)])
    r = recs[0]
    sups = SupervisionSet.from_segments([
        SupervisionSegment(id="s1", recording_id=r.id, start=0.2, duration=1.0),
        SupervisionSegment(id="s2", recording_id=r.id, start=1.5, duration=0.8)])
    cuts = CutSet.from_manifests(recordings=recs.filter(lambda x: x.id == r.id), supervisions=sups)
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wav.scp").write_text(f"{r.id} {r.sources[0].source}\n")
    (tmp_path / "data" / "segments").write_text(f"s1 {r.id} 0.2 1.2\ns2 {r.id} 1.5 2.3\n")
    y = load(r.sources[0].source, 16000)
    for src, name in ((tmp_path / "cuts.jsonl.gz", "cuts"), (tmp_path / "data" / "wav.scp", "kaldi")):
        store = tmp_path / f"{name}.zarr"
        assert extract(src, store, CFG, progress=False).ok
        from pipeline.io.store import Store
        entries = {e.id: e for e in Store(store).all_entries()}
        assert sorted(entries) == ["s1", "s2"]
        assert entries["s1"].n_samples == 16000 and entries["s2"].n_samples == 12800
        seg = load(entries["s2"].source, 16000)
        np.testing.assert_array_equal(seg, y[24000:36800])


def test_flac_outputs_are_the_wav_samples_and_listed_beside_them(tmp_path, folder):
    store = tmp_path / "s.zarr"
    assert extract(folder, store, CFG, progress=False).ok
    assert phase(store, tmp_path / "wav", n_iter=4, progress=False).ok
    assert phase(store, tmp_path / "flac", n_iter=4, progress=False, audio_format="flac").ok
    ids = [p.stem for p in folder.glob("*.wav")]
    for uid in ids:
        a = sf.read(str(tmp_path / "wav" / f"{uid}.wav"), dtype="int16")[0]
        b = sf.read(str(tmp_path / "flac" / f"{uid}.flac"), dtype="int16")[0]
        np.testing.assert_array_equal(a, b)
    assert sum(p.stat().st_size for p in (tmp_path / "flac").glob("*.flac")) < \
        0.8 * sum(p.stat().st_size for p in (tmp_path / "wav").glob("*.wav"))
    scp = (tmp_path / "flac" / "wav.scp").read_text().splitlines()
    assert sorted(line.split()[0] for line in scp) == sorted(ids)
    listed = read_manifest(tmp_path / "flac" / "manifest.jsonl")
    assert {u.id for u in listed} == set(ids) and all(u.sample_rate == 16000 for u in listed)
    res = score(tmp_path / "flac" / "wav.scp", tmp_path / "r.csv", folder, ["stoi"], progress=False)
    assert len(res.rows) == 3 and all(r["stoi"] > 0.8 for r in res.rows)
    from lhotse.kaldi import load_kaldi_data_dir
    recordings, _, _ = load_kaldi_data_dir(tmp_path / "flac", sampling_rate=16000)
    assert sorted(recordings.ids) == sorted(ids)
    assert json.loads((tmp_path / "flac" / ".pipeline-run.json").read_text())["format"] == "flac"

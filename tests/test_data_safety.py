"""A user's files are never replaced, and damage is never written out as audio: the data-loss
and wrong-output trials of a new user (each test failed before its fix)."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_recordings

from pipeline.config import load_config
from pipeline.io.audio import load
from pipeline.io.results import OutputError
from pipeline.io.store import Store, StoreError, summary
from pipeline.stages.extract import extract
from pipeline.stages.phase import phase
from pipeline.stages.run import run
from pipeline.stages.score import score

CFG = load_config("mel80-16k")


@pytest.fixture()
def recordings(tmp_path, wav_corpus):
    """Two real recordings in a folder of the user's (``mc4/``)."""
    return copy_recordings(wav_corpus[:2], tmp_path / "mc4")


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_phase_never_writes_over_the_source_recordings(tmp_path, recordings, overwrite):
    """`extract mc4 --out mc4.zarr; phase mc4.zarr --out mc4` suggested --overwrite, which
    replaced the recordings with reconstructions."""
    store = tmp_path / "mc4.zarr"
    assert extract(recordings, store, CFG, progress=False).ok
    before = contents(recordings)
    with pytest.raises(OutputError, match="holds the source audio") as exc:
        phase(store, recordings, n_iter=2, overwrite=overwrite, progress=False)
    assert "--overwrite" not in str(exc.value)
    assert contents(recordings) == before


def test_phase_never_replaces_files_it_did_not_write(tmp_path, recordings, wav_corpus):
    """Files named like the outputs, in a folder without this tool's run record: refused with
    and without --overwrite, and --overwrite is not suggested."""
    store = tmp_path / "s.zarr"
    assert extract(recordings, store, CFG, progress=False).ok
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    shutil.copy(wav_corpus[0].path, theirs / Path(wav_corpus[0].path).name)
    before = contents(theirs)
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="did not write") as exc:
            phase(store, theirs, n_iter=2, overwrite=overwrite, progress=False)
        assert "--overwrite" not in str(exc.value)
    assert contents(theirs) == before


def test_phase_cli_refuses_the_recordings_folder(tmp_path, recordings):
    store = tmp_path / "mc4.zarr"
    assert extract(recordings, store, CFG, progress=False).ok
    before = contents(recordings)
    for extra in ([], ["--overwrite"]):
        r = subprocess.run([sys.executable, "-m", "pipeline.cli", "phase", str(store), "--out",
                            str(recordings), "--iters", "2", "-q", *extra],
                           capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert "holds the source audio" in r.stderr and "Traceback" not in r.stderr
    assert contents(recordings) == before


def test_score_never_writes_over_an_input(tmp_path, recordings):
    """`score --ref mc5 --hyp wavs --out mc5/001.wav` replaced a recording with CSV text."""
    hyp = tmp_path / "wavs"
    shutil.copytree(recordings, hyp)
    before = contents(recordings)
    victim = next(recordings.glob("*.wav"))
    with pytest.raises(OutputError, match="one of the inputs|not a score report"):
        score(hyp, victim, recordings, ["stoi"], progress=False)
    other = tmp_path / "notes.csv"                       # someone's CSV, not our report
    other.write_text("name,grade\nann,A\n")
    with pytest.raises(OutputError, match="not a score report written by pipeline"):
        score(hyp, other, recordings, ["stoi"], progress=False)
    assert other.read_text() == "name,grade\nann,A\n"
    assert contents(recordings) == before
    report = tmp_path / "report.csv"                     # our own report is replaced on a re-run
    score(hyp, report, recordings, ["stoi"], progress=False)
    res = score(hyp, report, recordings, ["stoi"], progress=False)
    assert len(res.rows) == 2 and res.rows[0]["stoi"] > 0.99


def test_manifest_never_writes_over_a_recording(tmp_path, recordings):
    victim = next(recordings.glob("*.wav"))
    before = contents(recordings)
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "manifest", str(recordings),
                        "--out", str(victim)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert contents(recordings) == before
    good = tmp_path / "m.jsonl"
    for _ in range(2):                                   # a manifest of ours is replaced
        r = subprocess.run([sys.executable, "-m", "pipeline.cli", "manifest", str(recordings),
                            "--out", str(good)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert len(good.read_text().splitlines()) == 2


def test_predict_never_writes_over_its_input(tmp_path, recordings):
    from pipeline.stages.predict import predict
    victim = next(recordings.glob("*.wav"))
    before = contents(recordings)
    with pytest.raises(OutputError, match="one of the inputs"):
        predict(victim, recordings, CFG, n_iter=2)
    assert contents(recordings) == before
    out = tmp_path / "p"
    for _ in range(2):                                   # its own outputs are replaced
        res = predict(victim, out, CFG, n_iter=2)
    assert Path(res["output"]).exists()


def test_a_missing_chunk_is_damage_not_silence(tmp_path, recordings):
    """`rm STORE/shards/00000/mel/c/0/0`: info said complete, phase wrote full-scale noise."""
    store = tmp_path / "s.zarr"
    assert extract(recordings, store, CFG, progress=False).ok
    chunk = store / "shards" / "00000" / "mel" / "c" / "0" / "0"
    assert chunk.is_file()
    chunk.unlink()
    s = summary(Store(store))
    assert s["complete"]["extract"] == 0 and "00000" in s["damaged"]
    assert "chunk file(s) missing" in s["damaged"]["00000"]
    with pytest.raises(StoreError, match="damaged"):
        Store(store).read_array("00000", "mel")
    res = phase(store, tmp_path / "wavs", n_iter=2, progress=False)
    assert not res.ok and res.done == 0
    assert all("damaged" in f.reason for f in res.failures)
    assert not list((tmp_path / "wavs").glob("*.wav"))
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "info", str(store)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "chunk file(s) missing" in r.stdout
    assert extract(recordings, store, CFG, progress=False).done == 2     # re-extract repairs it
    assert summary(Store(store))["complete"]["extract"] == 1


def test_run_never_reads_its_own_output(tmp_path, recordings):
    """`run mc2/ --out mc2/out`, re-run to resume: 'extracted from a different input', and with
    --overwrite its own wavs were extracted as input."""
    out = recordings / "out"
    first = run(recordings, out, CFG, n_iter=2, progress=False)
    assert first.ok and first.stages["phase"].done == 2
    again = run(recordings, out, CFG, n_iter=2, progress=False)        # the resume
    assert again.ok and again.stages["phase"].done == 0
    redo = run(recordings, out, CFG, n_iter=2, progress=False, overwrite=True)
    assert redo.stages["phase"].done == 2
    assert len(Store(out / "mels.zarr").all_entries()) == 2
    assert not (out / "wav" / "out").exists()
    y = load(out / "wav" / f"{next(recordings.glob('*.wav')).stem}.wav", 16000)
    assert 0 < np.abs(y).max() < 1

"""Manifests and corpus recipes."""
import gzip
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.io.audio import load, write_wav
from pipeline.io.manifest import ManifestError, manifest_from_folder, read_manifest
from pipeline.recipes.asterisk import asterisk_prompts
from pipeline.recipes.festival import prepare_festival
from pipeline.recipes.pocketsphinx import prepare_pocketsphinx


def test_pocketsphinx_recipe_matches_committed_manifest(tmp_path, corpus_manifest):
    out = tmp_path / "ps.jsonl"
    utts = prepare_pocketsphinx(out)
    assert out.read_text() == corpus_manifest.read_text()
    assert len(utts) == 14                                   # 10 wav + 4 raw PCM
    assert abs(sum(u.duration for u in utts) - 46.6) < 0.1
    raw = [u for u in utts if u.path.endswith(".raw")]
    assert len(raw) == 4 and all(u.sample_rate == 16000 for u in raw)


@pytest.mark.unit
def test_manifest_ids_are_relative_paths(tmp_path):
    (tmp_path / "a b" / "ü").mkdir(parents=True)
    sf.write(tmp_path / "a b" / "ü" / "x 1.wav", np.zeros(1600, np.float32) + 0.1, 16000)
    sf.write(tmp_path / "top.flac", np.zeros(800, np.float32) + 0.1, 8000)
    (tmp_path / "notes.txt").write_text("hi")
    utts, fails = manifest_from_folder(tmp_path)
    assert [u.id for u in utts] == ["a b/ü/x 1", "top"]
    assert utts[1].sample_rate == 8000 and utts[1].num_samples == 800
    assert not fails


@pytest.mark.unit
def test_read_manifest_errors_name_the_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": "a", "path": "/x.wav"}\nnot json\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2"):
        read_manifest(p)


def _prompt_lists(root, prompts: dict[str, str]):
    """A stand-in for asterisk-core-sounds-{en,fr,es}'s prompt lists (the real ones: 1,564)."""
    for lang in ("en", "fr", "es"):
        d = root / f"asterisk-core-sounds-{lang}"
        d.mkdir(parents=True)
        with gzip.open(d / f"core-sounds-{lang}.txt.gz", "wt", encoding="utf-8") as fh:
            fh.write(f"; Core Asterisk Sounds ({lang})\n\n")
            fh.writelines(f"{k}: {v}\n" for k, v in prompts.items())
    return root


@pytest.mark.unit
def test_asterisk_prompts_fold_to_ascii_and_drop_tones(tmp_path):
    root = _prompt_lists(tmp_path, {"beep": "[this is a simple beep tone]",
                                    "silence/1": "1 second of silence",
                                    "agent-loggedoff": "Vous n'êtes plus en ligne.",
                                    "letters/at": "at [@]", "dieze": "\"dièse\" \\ (#)"})
    got = asterisk_prompts(root=root)
    assert got["fr/agent-loggedoff"] == "Vous n'etes plus en ligne."
    assert got["en/letters/at"] == "at"
    assert got["es/dieze"] == "diese"     # no quote, backslash or bracket reaches festival
    assert not any(k.endswith(("/beep", "/silence/1")) for k in got)
    assert len(got) == 9


def test_festival_recipe_synthesises_resumably(tmp_path):
    """A real festival run (`make test` installs festival + festvox-kallpc16k): the chosen
    prompts become non-silent 16 kHz wavs in the manifests; a rerun synthesises nothing."""
    root = _prompt_lists(tmp_path / "texts", {f"p{i}": f"Please enter the number {i} now."
                                              for i in range(8)})
    paths = prepare_festival(tmp_path / "out", ["kal"], per_voice=5, texts=root).manifests
    utts = read_manifest(paths["train"]) + read_manifest(paths["val"])
    assert len(utts) == 5 and len({u.id for u in utts}) == 5
    assert all(u.id.startswith("kal/") and u.sample_rate == 16000 and u.duration > 1.0
               for u in utts)
    y = load(utts[0].path, 16000)
    assert np.sqrt(np.mean(y ** 2)) > 0.01      # speech, not silence
    assert not (tmp_path / "out" / "festival-failures.csv").exists()
    mtimes = [Path(u.path).stat().st_mtime_ns for u in utts]
    prepare_festival(tmp_path / "out", ["kal"], per_voice=5, texts=root)
    assert [Path(u.path).stat().st_mtime_ns for u in utts] == mtimes
    with pytest.raises(ManifestError, match="unknown festival voice 'xx'.*kal"):
        prepare_festival(tmp_path / "out", ["xx"], texts=root)


def test_festival_recipe_keeps_what_a_dying_festival_finished(tmp_path, monkeypatch):
    """festival dies after writing two wavs: the first is kept, the second (perhaps cut short)
    dropped; the rest are failures naming festival's error, and a rerun can finish them."""
    src = tmp_path / "one.wav"
    write_wav(src, (0.1 * np.sin(np.arange(16000) * 0.1)).astype(np.float32), 16000)
    fake = tmp_path / "bin" / "festival"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\ngrep -o '\"/[^\"]*tmp.wav\"' | tr -d '\"' | head -2 | "
                    f"while read f; do cp {src} \"$f\"; done\necho 'segfault' >&2\nexit 139\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{path}")
    root = _prompt_lists(tmp_path / "texts", {f"p{i}": f"Number {i}." for i in range(4)})
    paths = prepare_festival(tmp_path / "out", ["kal"], per_voice=4, texts=root).manifests
    kept = read_manifest(paths["train"]) + read_manifest(paths["val"])
    assert len(kept) == 1
    rows = (tmp_path / "out" / "festival-failures.csv").read_text().splitlines()
    assert len(rows) == 4 and all("festival (voice kal_diphone) failed: segfault" in r
                                  for r in rows[1:])
    assert not list((tmp_path / "out").rglob("*.tmp.wav"))
    monkeypatch.setenv("PATH", path)                 # the real festival finishes the rest
    paths = prepare_festival(tmp_path / "out", ["kal"], per_voice=4, texts=root).manifests
    assert len(read_manifest(paths["train"]) + read_manifest(paths["val"])) == 4
    assert not (tmp_path / "out" / "festival-failures.csv").exists()


def test_recipe_failures_are_reported_not_dropped(tmp_path, wav_corpus):
    """A recipe's unreadable items go to its failures CSV and `prepare` exits 1 (two recipes
    used to drop them); the readable ones are in the manifest."""
    import json
    import subprocess
    import sys

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": "good", "path": wav_corpus[0].path}) + "\n"
                 + json.dumps({"id": "bad", "path": str(bad)}) + "\n")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "prepare", "speed", "--manifest",
                        str(m), "--factors", "1.1", "--out", str(tmp_path / "sp")],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "bad_sp1.1" in r.stderr and "Traceback" not in r.stderr
    assert [u.id for u in read_manifest(tmp_path / "sp" / "speed.jsonl")] == ["good_sp1.1"]
    rows = (tmp_path / "sp" / "speed-failures.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("bad_sp1.1,")


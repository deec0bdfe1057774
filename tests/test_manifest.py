
from pipeline.io.manifest import manifest_from_folder, prepare_pocketsphinx, read_manifest


def test_pocketsphinx_recipe_matches_committed_manifest(tmp_path, corpus_manifest):
    out = tmp_path / "ps.jsonl"
    utts = prepare_pocketsphinx(out)
    assert out.read_text() == corpus_manifest.read_text()
    assert len(utts) == 14                                   # 10 wav + 4 raw PCM
    assert abs(sum(u.duration for u in utts) - 46.6) < 0.1
    raw = [u for u in utts if u.path.endswith(".raw")]
    assert len(raw) == 4 and all(u.sample_rate == 16000 for u in raw)


def test_manifest_ids_are_relative_paths(tmp_path):
    import numpy as np
    import soundfile as sf
    (tmp_path / "a b" / "ü").mkdir(parents=True)
    sf.write(tmp_path / "a b" / "ü" / "x 1.wav", np.zeros(1600, np.float32) + 0.1, 16000)
    sf.write(tmp_path / "top.flac", np.zeros(800, np.float32) + 0.1, 8000)
    (tmp_path / "notes.txt").write_text("hi")
    utts, fails = manifest_from_folder(tmp_path)
    assert [u.id for u in utts] == ["a b/ü/x 1", "top"]
    assert utts[1].sample_rate == 8000 and utts[1].num_samples == 800
    assert not fails


def test_read_manifest_errors_name_the_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": "a", "path": "/x.wav"}\nnot json\n')
    import pytest

    from pipeline.io.manifest import ManifestError
    with pytest.raises(ManifestError, match=r"m.jsonl:2"):
        read_manifest(p)

"""`make demo` (pipeline.demo) on the embedded test corpus."""
import pytest

from pipeline.config import load_config
from pipeline.demo import run
from pipeline.io.store import Store
from pipeline.stages.extract import extract
from pipeline.stages.invert import invert


@pytest.mark.slow
def test_demo_starts_afresh_over_an_older_run(tmp_path):
    """A demo folder left by an older run (its store holding magnitudes, which `phase` would
    read instead of the mel; its wavs from other settings, which `phase` would refuse) is
    redone: the store holds the mel only and every utterance is scored."""
    out = tmp_path / "demo-out"
    first = run(out, iters=5)
    assert first["ok"]
    store = first["store"]
    extract(out / "pocketsphinx.jsonl", store, load_config("mel80-16k"), with_mag=True,
            shard_seconds=15, overwrite=True, progress=False)
    invert(store, "nnls", progress=False)
    res = run(out, iters=10)
    assert res["ok"]
    shard = Store(store).shard_names()[0]
    assert sorted(p.name for p in (store / "shards" / shard).iterdir()) == ["mel", "zarr.json"]
    rows = res["report"].read_text().splitlines()
    assert len(rows) == 1 + 14

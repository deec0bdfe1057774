"""Phase retrieval on the true magnitudes of real speech."""
import librosa
import numpy as np
import pytest
import torch
from pesq import pesq

from pipeline.config import load_config
from pipeline.dsp.mel import utterance_features
from pipeline.io.audio import load
from pipeline.io.store import Store
from pipeline.stages.phase import phase
from pipeline.synthesis import reconstruct


@pytest.fixture(scope="module")
def speech(wav_corpus):
    ys = [load(u.path, 16000) for u in wav_corpus[:6]]
    cfg = load_config("mel80-16k")
    return ys, utterance_features(ys, cfg)[0], cfg


@pytest.mark.slow
def test_fgla_agrees_with_librosa_griffinlim(speech):
    """Same algorithm (momentum 0.99, zero initial phase, 100 iterations): PESQ within 0.05."""
    ys, mags, cfg = speech
    ours = reconstruct(mags, [len(y) for y in ys], cfg, "fgla", n_iter=100)
    for y, m, o in zip(ys[:3], mags, ours):
        ref = librosa.griffinlim(m.T, n_iter=100, hop_length=256, n_fft=1024, init=None,
                                 length=len(y), momentum=0.99)
        assert len(o) == len(y)
        p_ours, p_ref = pesq(16000, y, o, "wb"), pesq(16000, y, ref, "wb")
        assert abs(p_ours - p_ref) < 0.05, (p_ours, p_ref)
        assert p_ours > 3.8


@pytest.mark.slow
def test_fgla_beats_gla_and_batches_like_single(speech):
    ys, mags, cfg = speech
    lengths = [len(y) for y in ys]
    f = reconstruct(mags, lengths, cfg, "fgla", n_iter=50)
    g = reconstruct(mags, lengths, cfg, "gla", n_iter=50)
    pf = np.mean([pesq(16000, y, o, "wb") for y, o in zip(ys, f)])
    pg = np.mean([pesq(16000, y, o, "wb") for y, o in zip(ys, g)])
    assert pf > pg + 0.1, (pf, pg)
    alone = reconstruct(mags[:1], lengths[:1], cfg, "fgla", n_iter=50)[0]
    np.testing.assert_allclose(alone, f[0], atol=2e-4)   # padding in a batch changes nothing


def test_batches_on_threads_give_what_one_thread_gives(speech):
    """Two torch threads: the buckets run on two Python threads (torch single-threaded in
    each); the waveforms are those of one thread, bit for bit, and the thread count is
    restored, also when a batch fails."""
    from pipeline.parallel.batching import for_each_batch

    ys, mags, cfg = speech
    lengths = [len(y) for y in ys]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = reconstruct(mags, lengths, cfg, "fgla", n_iter=20, batch_frames=256)
        torch.set_num_threads(2)
        two = reconstruct(mags, lengths, cfg, "fgla", n_iter=20, batch_frames=256)
        assert torch.get_num_threads() == 2
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)

        def boom(k: int) -> None:
            if k == 3:
                raise ValueError("batch 3 is bad")
        with pytest.raises(ValueError, match="batch 3"):
            for_each_batch(boom, list(range(6)), torch.device("cpu"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_phase_stage_true_magnitudes_and_resume(tmp_path, store80, corpus):
    out = tmp_path / "wavs"
    res = phase(store80, out, "fgla", n_iter=100, source="true", progress=False)
    assert res.ok and res.done == len(corpus)
    scores = []
    for u in corpus:
        y = load(u.path, 16000)
        o = load(out / f"{u.id}.wav", 16000)
        assert len(o) == len(y)
        scores.append(pesq(16000, y, o, "wb"))
    assert np.mean(scores) > 4.0            # measured 4.18
    (out / f"{corpus[0].id}.wav").unlink()
    again = phase(store80, out, "fgla", n_iter=100, source="true", progress=False)
    assert again.done == 1


@pytest.mark.slow
def test_dask_workers_and_threads_write_what_one_thread_writes(tmp_path, store80, corpus):
    """The local cluster path (forkserver workers, 1 torch thread each) and the in-process
    path with 2 threads (a shard's buckets on two Python threads) against the in-process path
    with 1 thread: the same samples for every utterance. The cluster leaves this process's
    environment as it was (dask writes MALLOC_TRIM_THRESHOLD_ and friends into it: processes
    started later ran FGLA 5x slower)."""
    import os
    env = dict(os.environ)
    one = phase(store80, tmp_path / "one", "fgla", n_iter=20, source="true", threads=1,
                progress=False)
    two = phase(store80, tmp_path / "two", "fgla", n_iter=20, source="true", workers=2,
                progress=False)
    threaded = phase(store80, tmp_path / "threads", "fgla", n_iter=20, source="true",
                     threads=2, progress=False)
    assert one.ok and two.ok and threaded.ok
    assert one.done == two.done == threaded.done == len(corpus)
    assert dict(os.environ) == env
    for u in corpus:
        ref = load(tmp_path / "one" / f"{u.id}.wav", 16000)
        for other in ("two", "threads"):
            np.testing.assert_array_equal(ref, load(tmp_path / other / f"{u.id}.wav", 16000))


def test_several_workers_get_the_last_shards_in_parts(tmp_path, store80, corpus):
    """With 2 workers the last 4 shard tasks are cut into parts of whole buckets (so the
    workers run out of work together); every utterance is in exactly one task, a resume plans
    only the part of a missing wav, and that part writes the same samples as the whole-shard
    run did. A crashed part names its shard and buckets in the failures."""
    from pipeline.io.results import StageResult
    from pipeline.parallel.tasks import TaskResult
    from pipeline.stages.phase import (
        PhaseJob,
        PhaseSettings,
        _task_label,
        part_items,
        phase_shard,
        plan_tasks,
    )

    store, out = Store(store80), tmp_path / "w"
    job = PhaseJob(str(store80), str(out), PhaseSettings("fgla", 20, "true", "zeros", "mag", 0),
                   threads=1)
    whole, counts = plan_tasks(store, job, 1)
    assert [k for k, _ in whole] == [(n, None) for n in store.shard_names()]
    assert sum(counts.values()) == len(corpus)           # the progress bar's total: utterances
    parts, _ = plan_tasks(store, job, 2, part_seconds=3.0)   # this corpus' shards are ~12 s
    names = store.shard_names()
    assert len(names) == 5 and parts[0][0] == (names[0], None)
    assert {n for (n, p), _ in parts[1:]} == set(names[1:]) and all(p for (_, p), _ in parts[1:])
    by_id = {u.id: u for u in corpus}
    ids = [it["id"] for key, _ in parts for it in part_items(store, key, job.batch_frames)]
    assert sorted(ids) == sorted(by_id)
    longest = max(u.duration for u in corpus)
    for (key, _), (after, _) in zip(parts[1:], parts[2:]):
        if key[0] == after[0]:               # not its shard's last part: ~3 s
            secs = sum(by_id[it["id"]].duration for it in part_items(store, key, job.batch_frames))
            assert 3.0 <= secs < 3.0 + longest, (key, secs)
    assert len(parts) == 8 > len(whole)

    assert phase(store80, out, "fgla", n_iter=20, source="true", threads=1, progress=False).ok
    victim = corpus[5].id
    before = load(out / f"{victim}.wav", 16000)
    (out / f"{victim}.wav").unlink()
    todo, counts = plan_tasks(store, job, 2, part_seconds=3.0)
    assert counts == {todo[0][0]: 1}
    assert len(todo) == 1 and victim in [it["id"] for it in part_items(store, todo[0][0],
                                                                         job.batch_frames)]
    redone = phase_shard(*todo[0][1])
    assert redone["n"] == 1 and redone["seconds"] == pytest.approx(corpus[5].duration)  # the rate
    np.testing.assert_array_equal(load(out / f"{victim}.wav", 16000), before)

    key = parts[1][0]                        # the stage's own failure labels
    crashed = StageResult(out).absorb([TaskResult(key, error="boom")],
                                      lambda k: part_items(store, k, job.batch_frames), "phase",
                                      label=_task_label)
    assert {f.id for f in crashed} == {it["id"] for it in part_items(store, key,
                                                                      job.batch_frames)}
    (start, stop) = key[1]
    assert all(f.reason == f"shard {key[0]} (buckets {start}-{stop - 1}) failed: boom"
               for f in crashed)


def test_phase_source_mag_without_mag_says_run_invert(tmp_path, store80):
    """--source mag on a store `invert` never saw, or saw only in part, says what to run."""
    import shutil
    s = tmp_path / "s.zarr"
    shutil.copytree(store80, s)
    with pytest.raises(ValueError, match="run `pipeline invert` on it"):
        phase(s, tmp_path / "w", source="mag", progress=False)
    store = Store(s, "r+")
    store.shard_group(store.shard_names()[0]).attrs["mag"] = {"complete": False}
    with pytest.raises(ValueError, match=r"finished 0 of \d+ shards"):
        phase(s, tmp_path / "w", progress=False)


def test_degli_block_with_zero_residual_is_gla(speech):
    """DeGLI's plumbing (amplitude + consistency projections, block loop): with the
    zero-initialised residual net it must reproduce plain GLA exactly."""
    from pipeline.algorithms.gla import gla
    from pipeline.models.degli import DeGLINet, degli
    from pipeline.parallel.batching import stack_frames

    ys, mags, cfg = speech
    m = stack_frames(mags[:3])
    lengths = torch.tensor([len(y) for y in ys[:3]])
    a, _ = degli(m, lengths, cfg, n_iter=8, model=DeGLINet(cfg).eval(), warmup=0)
    b, _ = gla(m, lengths, cfg, n_iter=8)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    # with a warm-up: FGLA iterations, then the blocks (= GLA steps here)
    from pipeline.algorithms.gla import iterate
    a, pair = degli(m, lengths, cfg, n_iter=3, model=DeGLINet(cfg).eval(), warmup=5)
    spec = iterate(iterate(m.to(torch.complex64), m, pair, 5, 0.99), m, pair, 3, 0.0)
    np.testing.assert_allclose(a.numpy(), pair.istft(spec).numpy(), atol=1e-5)
    # a net for the inverter's magnitudes leaves its output unprojected: the last block's
    # consistency projection adds nothing, so 3 blocks are 2 GLA steps
    from pipeline.models.degli import DeGLIConfig
    net = DeGLINet(cfg, DeGLIConfig(magnitude="model")).eval()
    a, pair = degli(m, lengths, cfg, n_iter=3, model=net, warmup=5)
    spec = iterate(iterate(m.to(torch.complex64), m, pair, 5, 0.99), m, pair, 2, 0.0)
    np.testing.assert_allclose(a.numpy(), pair.istft(spec).numpy(), atol=1e-5)
    # chained with FGLA's momentum, the zero-residual blocks are FGLA itself
    from pipeline.algorithms.gla import griffin_lim
    net = DeGLINet(cfg, DeGLIConfig(momentum=0.99)).eval()
    a, _ = degli(m, lengths, cfg, n_iter=8, model=net, warmup=0)
    b, _ = griffin_lim(m, lengths, cfg, n_iter=8, momentum=0.99)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    # past its horizon a net is switched off: it runs in the first 2 blocks only, and those
    # 2 blocks equal the same net without a horizon
    net = DeGLINet(cfg, DeGLIConfig(momentum=0.99, horizon=2)).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    a, _ = degli(m, lengths, cfg, n_iter=6, model=net, warmup=0)
    assert len(calls) == 2
    free = DeGLINet(cfg, DeGLIConfig(momentum=0.99)).eval()
    free.load_state_dict(net.state_dict())
    a2, _ = degli(m, lengths, cfg, n_iter=2, model=net, warmup=0)
    b2, _ = degli(m, lengths, cfg, n_iter=2, model=free, warmup=0)
    np.testing.assert_array_equal(a2.numpy(), b2.numpy())
    assert np.abs(a2.numpy() - griffin_lim(m, lengths, cfg, n_iter=2)[0].numpy()).max() > 1e-3


def test_degli_without_weights_says_how_to_train(corpus_manifest, tmp_path):
    """No DeGLI weights ship for 250 mels: the run fails before any work, saying how to
    train some."""
    from pipeline.io.weights import WeightsError
    from pipeline.stages.extract import extract
    store = tmp_path / "s250.zarr"
    extract(corpus_manifest, store, load_config("mel250-16k"), with_mag=True, progress=False)
    with pytest.raises(WeightsError, match="pipeline train degli"):
        phase(store, tmp_path / "w", "degli", n_iter=2, source="true", progress=False)


@pytest.mark.slow
def test_shipped_degli_on_real_speech(store80, corpus, tmp_path):
    """The shipped DeGLI net (true magnitudes, 80-mel STFT; acts in the first 8 iterations,
    FGLA after) on the 14 test utterances through the phase stage. An untrained net (a zero
    residual) is exactly FGLA, so the assertions are what training bought: after 8
    iterations the inconsistency it was trained to lower (the re-analysed magnitude's
    spectral convergence against the true one) is below FGLA's by > 5 % on average and on
    most utterances, at a PESQ-WB above 3.2. It is no speed-up: one block costs ~28 FGLA
    iterations on CPU (BENCHMARKS.md)."""
    import torch

    from pipeline.dsp.spectral import spectral_convergence
    from pipeline.models.degli import load_degli
    net = load_degli(None, load_config("mel80-16k"))      # checksum-verified, card config
    assert net.hparams.momentum == 0.99 and net.hparams.horizon == 8
    cfg = load_config("mel80-16k")
    refs = [load(u.path, 16000) for u in corpus]
    true = utterance_features(refs, cfg)[0]
    scores, inconsistency = {}, {}
    for algo in ("degli", "fgla"):
        out = tmp_path / algo
        assert phase(store80, out, algo, n_iter=8, source="true", progress=False).ok
        ys = [load(out / f"{u.id}.wav", 16000) for u in corpus]
        scores[algo] = np.mean([pesq(16000, r, y, "wb") for r, y in zip(refs, ys)])
        inconsistency[algo] = np.array([
            float(spectral_convergence(reference=torch.from_numpy(t), estimate=torch.from_numpy(a)))
            for t, a in zip(true, utterance_features(ys, cfg)[0])])
    assert scores["degli"] > 3.2, scores
    assert inconsistency["degli"].mean() < 0.95 * inconsistency["fgla"].mean(), inconsistency
    assert (inconsistency["degli"] < inconsistency["fgla"]).sum() >= 10, inconsistency

def test_in_memory_inversion_writes_what_invert_then_phase_writes(tmp_path, store80, corpus):
    """`phase --source mel` (the default when `invert` has not run) inverts each batch in
    memory: the same samples as `invert` + `phase --source mag`, and no magnitude in the
    store."""
    import shutil

    from pipeline.stages.invert import invert

    fresh = tmp_path / "fresh.zarr"
    shutil.copytree(store80, fresh)
    mem = phase(fresh, tmp_path / "mem", "fgla", n_iter=20, project="mag", progress=False)
    assert mem.ok and mem.done == len(corpus)
    s = Store(fresh)
    assert not any(s.shard_attrs(n).get("mag") for n in s.shard_names())
    assert invert(fresh, "pinv", progress=False).ok
    stored = phase(fresh, tmp_path / "mag", "fgla", n_iter=20, project="mag", progress=False)
    assert stored.ok
    for u in corpus:
        a, b = load(tmp_path / "mem" / f"{u.id}.wav", 16000), load(tmp_path / "mag" / f"{u.id}.wav", 16000)
        np.testing.assert_array_equal(a, b)
    from pipeline.errors import UsageError
    with pytest.raises(UsageError, match="unknown method 'nope'"):
        phase(fresh, tmp_path / "x", "fgla", n_iter=2, source="mel", method="nope", progress=False)

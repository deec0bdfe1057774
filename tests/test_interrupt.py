"""Ctrl-C stops a run between iterations, not after the current batch, and writes nothing
after it; progress moves within long items (each test failed before its fix)."""
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import copy_recordings, default_sigint

from pipeline.config import load_config
from pipeline.dsp.mel import utterance_features
from pipeline.io.audio import load
from pipeline.parallel import batching
from pipeline.stages.extract import extract
from pipeline.synthesis import reconstruct


@pytest.mark.slow
def test_ctrl_c_stops_between_iterations(tmp_path, wav_corpus):
    """It waited for the batches on other threads to finish their iterations (55 s at
    --iters 20000) and wrote their wavs after the interrupt."""
    corpus = copy_recordings(wav_corpus[:4], tmp_path / "c")
    store = tmp_path / "s.zarr"
    assert extract(corpus, store, load_config("mel80-16k"), progress=False).ok
    out = tmp_path / "w"
    p = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "phase", str(store), "--out",
                          str(out), "--iters", "20000", "--tol", "0", "-q"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / ".pipeline-run.json").exists():
        time.sleep(0.05)
    time.sleep(2.0)                        # iterating by now (a batch takes minutes)
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    stopped = time.time() - t0
    assert p.returncode == 130, err
    assert stopped < 10, f"took {stopped:.1f} s to stop"
    assert not list(out.glob("*.wav")) and not list(out.glob(".tmp-*"))


def test_progress_moves_within_a_long_item(wav_corpus):
    """A long item (here: over 64 frames, in chunks of 32) reported nothing until it was done;
    each iteration of each chunk now adds its share, one utterance in all."""
    cfg = load_config("mel80-16k")
    y = load(wav_corpus[0].path, 16000)
    mag = utterance_features([y], cfg)[0][0]
    got: list[float] = []
    batching.PROGRESS_HOOK = got.append
    try:
        reconstruct([mag], [len(y)], cfg, "fgla", n_iter=5, long_frames=64, chunk_frames=32)
    finally:
        batching.PROGRESS_HOOK = None
    chunks = -(-mag.shape[0] // 32)
    assert len(got) == 5 * chunks and sum(got) == pytest.approx(1.0)
    assert np.all(np.diff(np.cumsum(got)) > 0)


def test_stop_is_cleared_after_an_interrupt():
    """An interrupted batch run leaves no stop behind for the next one (library use)."""
    def boom(_):
        raise KeyboardInterrupt

    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            batching.for_each_batch(boom, [1, 2, 3], torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert not batching.STOP.is_set()
    batching.tick()                       # does not raise

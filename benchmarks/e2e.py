"""End to end, as users run it: whole CLI commands (process start-up included) against the
librosa peer doing the same job, in the same run, on >= 10 minutes of audio.

Corpus: the test corpus (pocketsphinx-testdata, 46.6 s) repeated --repeat times as distinct
ids (13: 10.1 min). Three figures:

1. mel -> wav, learned inverter + FGLA 100 (magnitude fixed):
   ``pipeline phase STORE --source mel --method model --project mag --iters 100`` (one
   process, the magnitude inverted in memory) vs a script calling
   ``librosa.feature.inverse.mel_to_audio(n_iter=100)`` per utterance on the store's mels
   (same process start-up, same wav writing);
2. phase alone, FGLA 100 on the true magnitudes: ``pipeline phase --source true --iters 100``
   vs ``librosa.griffinlim(n_iter=100, momentum=0.99)`` per utterance;
3. the store of the default route (``extract``: the mel only) against the 16-bit PCM size of
   its audio;
4. (``--jobs default``) the default route, ``pipeline phase STORE --source mel`` (pinv + joint
   mel inversion, its default iterations), and the same with each of ``--variant`` (e.g.
   ``"--tol 0.03"``), against ``mel_to_audio(n_iter=100)``.

PESQ-WB of the first copy of the corpus (14 utterances; with ``--manifest``, of every
utterance) is printed beside each route.

    .venv/bin/python benchmarks/e2e.py [--repeat 13] [--workers 1] [--rounds 3] [--tag NAME]
    .venv/bin/python benchmarks/e2e.py --manifest data/heldout-10min.jsonl --jobs default \
        --variant "--iters 800" --variant "--tol 0.03" --tag heldout

``--rounds N``: each comparison runs N times, ours and the peer alternated (each into a fresh
folder), and the medians are compared: this VM moves single timings by +-10 %.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from _corpus import repeated, save_results
from pesq import pesq

from pipeline.io.audio import load
from pipeline.io.manifest import write_manifest
from pipeline.io.store import Store

PIPELINE = [sys.executable, "-m", "pipeline.cli"]

# The peer, as a user would script it: read the store's mels (or true magnitudes), invert
# each utterance with librosa, write a wav per utterance.
PEER = textwrap.dedent("""
    import sys, numpy as np, librosa, soundfile as sf
    from pathlib import Path
    from pipeline.io.store import Store
    store, out, what = Store(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    cfg = store.config
    for e, x in store.iter_utterances("mel" if what == "mel" else "mag_true"):
        if what == "mel":
            y = librosa.feature.inverse.mel_to_audio(
                np.exp(x.T), sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                win_length=cfg.win_length, center=cfg.center, pad_mode=cfg.pad_mode,
                power=cfg.power, n_iter=100, fmin=cfg.fmin, fmax=cfg.fmax, length=e.n_samples)
        else:
            y = librosa.griffinlim(x.T, n_iter=100, hop_length=cfg.hop_length, n_fft=cfg.n_fft,
                                   win_length=cfg.win_length, center=cfg.center,
                                   pad_mode=cfg.pad_mode, momentum=0.99, init=None,
                                   length=e.n_samples)
        p = out / (e.id + ".wav")
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, np.clip(y, -1, 1), cfg.sample_rate, subtype="PCM_16")
""")


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def first_copy_pesq(store: Store, wavs: Path, every: bool = False) -> float:
    scores = []
    for e in store.all_entries():
        if every or e.id.startswith("r0/"):
            ref = load(e.source, store.config.sample_rate)
            scores.append(pesq(16000, ref, load(wavs / f"{e.id}.wav", 16000), "wb"))
    return round(float(np.mean(scores)), 3)


def compare(ours_cmd: list[str], peer_cmd: list[str], what: str, tmp: Path, rounds: int,
            audio: float, store: Store, every: bool = False) -> dict:
    """``rounds`` alternated runs of ours (``... --out DIR``) and the peer (``... DIR what``);
    median seconds, their ratio, and PESQ-WB of the last round's wavs."""
    return compare_many({"ours": ours_cmd}, peer_cmd, what, tmp, rounds, audio, store,
                        every)["ours"]


def compare_many(ours: dict[str, list[str]], peer_cmd: list[str], what: str, tmp: Path,
                 rounds: int, audio: float, store: Store, every: bool = False) -> dict:
    """:func:`compare` for several of our commands, each round running all of them and the
    peer in turn; per command its figures against the peer's."""
    times: dict[str, list[float]] = {k: [] for k in ours}
    peer = []
    for r in range(rounds):
        for k, cmd in ours.items():
            times[k].append(timed([*cmd, "--out", str(tmp / f"{k}{r}")]))
        peer.append(timed([*peer_cmd, str(tmp / f"peer{r}"), what]))
    p = statistics.median(peer)
    p_pesq = first_copy_pesq(store, tmp / f"peer{rounds - 1}", every)
    out = {}
    for k in ours:
        o = statistics.median(times[k])
        out[k] = {"ours_seconds": round(o, 2), "librosa_seconds": round(p, 2),
                  "ours_rounds": [round(x, 2) for x in times[k]],
                  "librosa_rounds": [round(x, 2) for x in peer],
                  "ours_rtf": round(o / audio, 4), "librosa_rtf": round(p / audio, 4),
                  "speedup": round(p / o, 2),
                  "pesq_wb_ours": first_copy_pesq(store, tmp / f"{k}{rounds - 1}", every),
                  "pesq_wb_librosa": p_pesq}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=13)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the results file (e.g. the machine)")
    ap.add_argument("--manifest", default="", help="this corpus instead of the repeated test corpus")
    ap.add_argument("--jobs", nargs="+", default=["mel_to_wav", "phase_fgla100"],
                    choices=["mel_to_wav", "phase_fgla100", "default"])
    ap.add_argument("--variant", action="append", default=[],
                    help="--jobs default: options of a further run of the default route")
    a = ap.parse_args()
    out: dict = {}
    every = bool(a.manifest)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = (Path(a.manifest) if a.manifest else
                    write_manifest(repeated(a.repeat), tmp / "corpus.jsonl"))
        lean, full = tmp / "lean.zarr", tmp / "full.zarr"
        j = ["--workers", str(a.workers), "-q"]
        out["extract_seconds"] = round(timed([*PIPELINE, "extract", str(manifest), "--out",
                                              str(lean), *j]), 2)
        if "phase_fgla100" in a.jobs:
            subprocess.run([*PIPELINE, "extract", str(manifest), "--out", str(full),
                            "--with-mag", *j], check=True, stdout=subprocess.DEVNULL)
        store = Store(lean)
        audio = sum(e.n_samples for e in store.all_entries()) / store.config.sample_rate
        pcm = 2 * sum(e.n_samples for e in store.all_entries())
        size = sum(p.stat().st_size for p in lean.rglob("*") if p.is_file())
        out.update(audio_seconds=round(audio, 1), store_bytes=size, pcm_bytes=pcm,
                   store_vs_pcm=round(size / pcm, 3))
        print(out, flush=True)

        if "mel_to_wav" in a.jobs:
            ours_cmd = [*PIPELINE, "phase", str(lean), "--source", "mel", "--method", "model",
                        "--project", "mag", "--iters", "100", *j]
            out["mel_to_wav"] = compare(ours_cmd, [sys.executable, "-c", PEER, str(lean)], "mel",
                                        tmp / "mel", a.rounds, audio, store, every)
            print(out["mel_to_wav"], flush=True)
        if "phase_fgla100" in a.jobs:
            ours_cmd = [*PIPELINE, "phase", str(full), "--source", "true", "--iters", "100", *j]
            out["phase_fgla100"] = compare(ours_cmd, [sys.executable, "-c", PEER, str(full)],
                                           "true", tmp / "gl", a.rounds, audio, Store(full), every)
            print(out["phase_fgla100"], flush=True)
        if "default" in a.jobs:
            base = [*PIPELINE, "phase", str(lean), "--source", "mel", *j]
            ours = {"default": base, **{f"v{i}": [*base, *v.split()]
                                        for i, v in enumerate(a.variant)}}
            res = compare_many(ours, [sys.executable, "-c", PEER, str(lean)], "mel",
                               tmp / "default", a.rounds, audio, store, every)
            out["default_route"] = {("default" if k == "default" else a.variant[int(k[1:])]): v
                                    for k, v in res.items()}
            print(out["default_route"], flush=True)
    save_results(f"e2e-workers{a.workers}" + (f"-{a.tag}" if a.tag else ""), out)


if __name__ == "__main__":
    main()

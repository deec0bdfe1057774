"""The scale run: a corpus of >= 10 hours through the whole pipeline, each stage as the CLI
command users run, with --workers 2: throughput per stage, peak memory of the whole process
tree (the CLI process and its dask workers, sampled every 0.5 s), disk used, and the time a
killed run takes to resume.

Corpus (training corpora only, never the test corpus): the asterisk en/fr/es/ru prompts, the
klettres/ktuberling words and the speed-perturbed (0.9, 1.1) asterisk en/fr/es prompts,
5.65 h, twice as distinct ids (``rep0/``, ``rep1/``): 11.3 h. Recipe::

    pipeline prepare asterisk --languages en,fr,es --out data/asterisk
    pipeline prepare asterisk --languages ru --out data/asterisk-ru
    pipeline prepare kde --out data/kde
    cat data/asterisk/asterisk-{train,val}.jsonl > data/asterisk/all.jsonl
    pipeline prepare speed --manifest data/asterisk/all.jsonl --factors 0.9,1.1 --out data/speed
    .venv/bin/python benchmarks/scale.py --out /tmp/scale [--subset-hours 1]

Route: ``extract`` (the mel only) then ``phase --source mel --method model --project mag
--iters 100`` (the learned inverter in memory + FGLA 100). ``--kill-at F``: the phase run is
killed (SIGKILL to its process group) once a fraction F of the wavs exist, then re-run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from _corpus import save_results

REPO = Path(__file__).resolve().parents[1]
PIPELINE = [sys.executable, "-m", "pipeline.cli"]
MANIFESTS = ["data/asterisk/all.jsonl", "data/asterisk-ru/asterisk-train.jsonl",
             "data/asterisk-ru/asterisk-val.jsonl", "data/kde/kde-train.jsonl",
             "data/kde/kde-val.jsonl", "data/speed/speed.jsonl"]


def build_manifest(out: Path, repeat: int, hours: float | None) -> tuple[Path, float, int]:
    """The corpus manifest, ``repeat`` times under distinct ids; with ``hours``, every k-th
    line of it (k chosen to give about that much audio), so that a subset has the whole
    corpus's mix of voices and lengths (the longest items set the memory a shard needs)."""
    rows = []
    for m in MANIFESTS:
        p = REPO / m
        if p.exists():
            rows += [json.loads(line) for line in p.open()]
    rows = [{**r, "id": f"rep{k}/{r['id']}"} for k in range(repeat) for r in rows]
    if hours is not None:
        every = max(1, round(sum(r["duration"] for r in rows) / (hours * 3600)))
        rows = rows[::every]
    path = out / f"corpus-{len(rows)}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, sum(r["duration"] for r in rows), len(rows)


def tree_rss(proc: psutil.Process) -> dict[str, int]:
    """RSS of the process tree, in total and by role: ``cli`` (the command's own process,
    which also runs the dask scheduler), ``forkserver`` (the workers' parent), ``worker``
    (the largest single worker; ``workers``: all of them)."""
    roles = {"total": 0, "cli": 0, "forkserver": 0, "other": 0, "worker": 0, "workers": 0}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss = p.memory_info().rss
            if p.pid == proc.pid:
                role = "cli"
            elif p.ppid() != proc.pid:
                role = "worker"            # forked by the forkserver (same command line)
            elif "forkserver" in " ".join(p.cmdline()):
                role = "forkserver"
            else:
                role = "other"             # multiprocessing's resource tracker
        except psutil.Error:
            continue
        roles["total"] += rss
        if role == "worker":
            roles["workers"] += rss
        roles[role] = max(roles[role], rss)
    return roles


def watched(cmd: list[str], stop_when=None) -> dict:
    """Run ``cmd`` in its own process group; peak RSS of its tree (in total and by role);
    optionally SIGKILL the group once ``stop_when()`` is true."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, text=True)
    ps, killed = psutil.Process(proc.pid), False
    peak = dict.fromkeys(("total", "cli", "forkserver", "other", "worker", "workers"), 0)
    while proc.poll() is None:
        now = tree_rss(ps)
        peak = {k: max(v, now[k]) for k, v in peak.items()}
        if stop_when is not None and not killed and stop_when():
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.5)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode not in (0,) and not killed:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {err[-2000:]}")
    return {"seconds": round(time.perf_counter() - t, 1), "peak_rss_mb": round(peak["total"] / 2**20),
            "peak_rss_mb_by_role": {k: round(v / 2**20) for k, v in peak.items() if k != "total"},
            "killed": killed, "returncode": proc.returncode}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def one_run(out: Path, manifest: Path, audio_s: float, workers: int, kill_at: float | None,
            n_items: int) -> dict:
    store, wavs = out / "mels.zarr", out / "wav"
    j = ["--workers", str(workers), "-q"]
    res: dict = {"audio_hours": round(audio_s / 3600, 2), "utterances": n_items}
    ex = watched([*PIPELINE, "extract", str(manifest), "--out", str(store), *j])
    res["extract"] = {**ex, "x_real_time": round(audio_s / ex["seconds"], 1)}
    print(json.dumps(res), flush=True)
    phase_cmd = [*PIPELINE, "phase", str(store), "--out", str(wavs), "--source", "mel",
                 "--method", "model", "--project", "mag", "--iters", "100", *j]
    if kill_at:
        target = int(kill_at * n_items)
        first = watched(phase_cmd, lambda: wavs.exists() and
                        sum(1 for _ in wavs.rglob("*.wav")) >= target)
        done = sum(1 for _ in wavs.rglob("*.wav"))
        t = time.perf_counter()
        rest = watched(phase_cmd)
        res["phase_killed_then_resumed"] = {
            "killed_after_s": first["seconds"], "wavs_before_kill": done,
            "resume_seconds": rest["seconds"], "peak_rss_mb": max(first["peak_rss_mb"],
                                                                  rest["peak_rss_mb"]),
            "peak_rss_mb_by_role": {k: max(first["peak_rss_mb_by_role"][k],
                                           rest["peak_rss_mb_by_role"][k])
                                    for k in first["peak_rss_mb_by_role"]},
            "total_seconds": round(first["seconds"] + time.perf_counter() - t, 1)}
        res["phase"] = {"seconds": round(first["seconds"] + rest["seconds"], 1),
                        "peak_rss_mb": max(first["peak_rss_mb"], rest["peak_rss_mb"])}
    else:
        res["phase"] = watched(phase_cmd)
    res["phase"]["x_real_time"] = round(audio_s / res["phase"]["seconds"], 1)
    n_wavs = sum(1 for _ in wavs.rglob("*.wav"))
    pcm = 2 * audio_s * 16000
    res["disk"] = {"store_mb": round(du(store) / 1e6, 1), "wav_mb": round(du(wavs) / 1e6, 1),
                   "pcm_mb": round(pcm / 1e6, 1), "store_vs_pcm": round(du(store) / pcm, 3),
                   "wavs_written": n_wavs}
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kill-at", type=float, default=0.5)
    ap.add_argument("--subset-hours", type=float, default=1.0,
                    help="also run a subset this long first (every k-th item: memory flat in corpus size?)")
    ap.add_argument("--only-subset", action="store_true", help="run the subset only")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    results = {}
    if a.subset_hours:
        sub = a.out / "subset"
        sub.mkdir(exist_ok=True)
        man, audio, n = build_manifest(sub, a.repeat, a.subset_hours)
        results["subset"] = one_run(sub, man, audio, a.workers, None, n)
    if a.only_subset:
        save_results(f"scale-subset-{a.subset_hours:g}h", results)
        return
    full = a.out / "full"
    full.mkdir(exist_ok=True)
    man, audio, n = build_manifest(full, a.repeat, None)
    results["full"] = one_run(full, man, audio, a.workers, a.kill_at, n)
    save_results("scale", results)


if __name__ == "__main__":
    main()

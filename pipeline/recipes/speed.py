"""Kaldi-style speed perturbation of a manifest's utterances (new pitch and formants: new
pseudo-speakers for training)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from pipeline.io.audio import AudioError, info, load, write_wav
from pipeline.io.manifest import ManifestError, Utterance, read_manifest, write_manifest
from pipeline.io.results import Failure, write_failures
from pipeline.recipes._common import Prepared


def speed_perturb(manifest: str | Path, factors: Iterable[float], out_dir: str | Path,
                  sample_rate: int = 16000, jobs: int = 2) -> Prepared:
    """Each utterance resampled by ``factor`` and kept at ``sample_rate`` (faster and higher
    for ``factor > 1``). Writes ``out_dir/wav/sp<factor>/<id>.wav`` and ``out_dir/speed.jsonl``
    with ids ``<id>_sp<factor>`` (the originals are not copied); utterances that cannot be
    read go to ``speed-failures.csv``. Existing wavs are kept (resumable)."""
    import librosa

    factors = [float(f) for f in factors]
    if not factors or any(not 0.5 <= f <= 2.0 for f in factors):
        raise ManifestError(f"speed factors must lie in [0.5, 2], got {factors}")
    out_dir = Path(out_dir).resolve()
    utts = read_manifest(manifest)

    def one(job: tuple[Utterance, float]) -> Utterance | Failure:
        u, f = job
        dst = out_dir / "wav" / f"sp{f:g}" / f"{u.id}.wav"
        uid = f"{u.id}_sp{f:g}"
        try:
            if not dst.exists():
                y = load(u.path, sample_rate)
                write_wav(dst, librosa.resample(y, orig_sr=sample_rate * f, target_sr=sample_rate,
                                                res_type="soxr_hq"), sample_rate)
            meta = info(dst)
        except AudioError as exc:
            return Failure(uid, u.path, "prepare", str(exc))
        return Utterance(uid, str(dst), meta["sample_rate"], meta["channels"],
                         meta["num_samples"], meta["duration"])

    with ThreadPoolExecutor(jobs) as pool:
        done = list(pool.map(one, [(u, f) for f in factors for u in utts]))
    fails = [d for d in done if isinstance(d, Failure)]
    out = write_manifest([d for d in done if isinstance(d, Utterance)], out_dir / "speed.jsonl")
    return Prepared({"speed": out}, fails, write_failures(fails, out_dir / "speed-failures.csv"))

"""``pipeline run``: the stages chained in one process, on one cluster.

``extract`` -> ``phase`` (the mel inverted in memory, batch by batch: no magnitude on disk)
[-> ``score``], or with ``keep_mag`` ``extract`` -> ``invert`` (magnitudes kept in the store)
-> ``phase``. Each stage is the same function the stage commands call, so a killed run
resumes where it stopped (re-run the same command), and the folder it writes is what the
stage commands would have written::

    OUT/mels.zarr      the store (mel; mag with keep_mag)
    OUT/wav/           <utterance id>.wav
    OUT/report.csv     per-utterance scores (with score), report.summary.csv, report.md
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import AudioConfig
from pipeline.io.results import StageResult
from pipeline.parallel.tasks import shared_client
from pipeline.stages.extract import extract
from pipeline.stages.invert import invert
from pipeline.stages.phase import phase
from pipeline.stages.score import ScoreResult
from pipeline.stages.score import score as score_stage

STAGE_MODULES = ["pipeline.stages.extract", "pipeline.stages.invert", "pipeline.stages.phase",
                 "pipeline.stages.score"]


@dataclass
class RunResult:
    """The result of each stage that ran, in order, and the scores' summary (with score)."""
    out: Path
    stages: dict[str, StageResult] = field(default_factory=dict)
    score: ScoreResult | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        failed = self.score.failures if self.score is not None else 0
        return all(r.ok for r in self.stages.values()) and not failed


def run(inputs: list[str | Path] | str | Path, out: str | Path, config: AudioConfig, *,
        method: str = "pinv", invert_weights: str | None = None, algo: str = "fgla",
        n_iter: int | None = None, project: str = "auto", keep_mag: bool = False,
        score: bool = False, metrics: list[str] | None = None, workers: int = 1,
        cluster: str = "local", profile: str | None = None, device: str = "auto",
        progress: bool = True, overwrite: bool = False, peak_dbfs: float | None = None,
        audio_format: str = "wav", subtype: str = "PCM_16",
        tol: float | None = None) -> RunResult:
    """Audio -> waveforms (and scores) in ``out``; see the module docstring for the layout.
    What it writes (``out/wav``, ``out/mels.zarr``) is left out of an input folder's search,
    so a re-run (the way to resume) never reads its own output as input."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store, wavs = out / "mels.zarr", out / "wav"
    res = RunResult(out)
    with shared_client(workers, cluster, profile, preload=STAGE_MODULES):
        res.stages["extract"] = extract(inputs, store, config, overwrite=overwrite,
                                        workers=workers, cluster=cluster, profile=profile,
                                        progress=progress, exclude=[wavs, store])
        if keep_mag:
            res.stages["invert"] = invert(store, method, weights=invert_weights, device=device,
                                          overwrite=overwrite, workers=workers, cluster=cluster,
                                          profile=profile, progress=progress)
        res.stages["phase"] = phase(store, wavs, algo, n_iter=n_iter, project=project,
                                    source="mag" if keep_mag else "mel", method=method,
                                    invert_weights=invert_weights, device=device,
                                    overwrite=overwrite, workers=workers, cluster=cluster,
                                    profile=profile, progress=progress, peak_dbfs=peak_dbfs,
                                    audio_format=audio_format, subtype=subtype, tol=tol)
        if score:
            res.score = score_stage(wavs, out / "report.csv", store, metrics, workers=workers,
                                    cluster=cluster, profile=profile, progress=progress)
    res.seconds = time.perf_counter() - t0
    return res

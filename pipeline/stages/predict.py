"""One file end to end: audio -> mel -> magnitude -> waveform, with a picture and scores."""
from __future__ import annotations

import json
from pathlib import Path

import soundfile as sf
import torch

from pipeline.config import AudioConfig
from pipeline.dsp.mel import mel_spectrogram
from pipeline.io.audio import AudioError, AudioFormat, load, write_wav
from pipeline.io.results import check_writable, claim_file
from pipeline.metrics.registry import MetricError, pesq_wb, stoi
from pipeline.parallel.batching import resolve_device
from pipeline.plots import spectrogram_pair
from pipeline.synthesis import (
    AlgoOptions,
    check_route,
    default_iters,
    invert_frames,
    reconstruct,
    resolve_inverter,
    resolve_tol,
)


def _is_record(path: Path) -> bool:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and {"input", "output", "config"} <= set(d)


def check_outputs(stem: Path, audio: Path, suffix: str = ".wav") -> None:
    """Refuse, before any work, to write over the input or over files an earlier predict did
    not write: ``<stem>.json`` must be predict's record, and an existing ``<stem><suffix>``
    / ``.png`` the output that record names."""
    record = stem.with_suffix(".json")
    claim_file(record, [audio], _is_record, "prediction record")
    ours = (json.loads(record.read_text()).get("output") if record.exists() else None)
    for ext, what in ((suffix, "reconstruction"), (".png", "spectrogram picture")):
        claim_file(stem.with_suffix(ext), [audio],
                   lambda p: ours is not None and Path(ours).resolve() == p.with_suffix(suffix).resolve(),
                   what)


def predict(audio: str | Path, out: str | Path, cfg: AudioConfig, *, method: str = "pinv",
            weights: str | None = None, algo: str = "fgla", n_iter: int | None = None,
            device: str = "auto", project: str = "auto", peak_dbfs: float | None = None,
            audio_format: str = "wav", subtype: str = "PCM_16",
            tol: float | None = None) -> dict:
    """Reconstruct ``audio`` from its mel; writes ``<stem>.wav`` (``.flac`` with
    ``audio_format``), ``.png`` and ``.json`` in ``out``. ``tol``: stop joint mel inversion
    when converged (``n_iter`` a maximum; the record lists the iterations it took; default:
    :func:`pipeline.synthesis.resolve_tol`)."""
    audio, out = Path(audio), Path(out)
    fmt = AudioFormat(audio_format, subtype)
    if audio.suffix.lower() in (".npy", ".npz", ".pt"):
        raise AudioError(f"{audio} is a mel file, not audio: vocode it with `pipeline vocode "
                         f"{audio} --out DIR --preset NAME`")
    check_route(algo, project, cfg)
    inverter = resolve_inverter(method, weights, cfg)
    n_iter = n_iter if n_iter is not None else default_iters(algo, project, cfg)
    tol = resolve_tol(tol, algo, project, cfg)
    dev = resolve_device(device)
    y = load(audio, cfg.sample_rate)
    if len(y) < cfg.win_length:
        raise AudioError(f"{audio}: {len(y)} sample(s) at {cfg.sample_rate} Hz; reconstruction "
                         f"needs at least one frame ({cfg.win_length} samples)")
    check_writable(out)
    stem = out / audio.stem
    check_outputs(stem, audio, fmt.suffix)
    with torch.inference_mode():
        mel = mel_spectrogram(torch.from_numpy(y)[None], cfg)[0].T.numpy()
    model = None
    if method == "model":
        from pipeline.models.inverter import load_invert_model
        model = load_invert_model(inverter.weights, cfg, dev)
    mag = invert_frames([mel], cfg, method, model=model, device=dev)
    ran: list[int] = []
    rec = reconstruct(mag, [len(y)], cfg, algo, n_iter=n_iter, device=dev, project=project,
                      mels=[mel], options=AlgoOptions(tol=tol), iterations=ran)[0]
    scores: dict = {"input": str(audio), "output": str(stem.with_suffix(fmt.suffix)), "config": cfg.name,
                    "method": method, "algo": algo, "iters": n_iter, "project": project,
                    **({"tol": tol} if tol else {}), "iterations": ran[0]}
    record = stem.with_suffix(".json")
    record.write_text(json.dumps(scores, indent=1) + "\n")   # first: names the files it owns
    level = write_wav(stem.with_suffix(fmt.suffix), rec, cfg.sample_rate, peak_dbfs, fmt)
    scores.update(peak_dbfs=round(level.peak_dbfs, 2), clipped=round(level.clipped, 6),
                  gain_db=round(level.gain_db, 2))
    rec, _ = sf.read(str(stem.with_suffix(fmt.suffix)), dtype="float32")   # scored as written
    spectrogram_pair(y, rec, cfg.sample_rate, stem.with_suffix(".png"),
                     f"{audio.name}: {method} + {algo} {n_iter} ({project})")
    for name, fn in (("pesq_wb", pesq_wb), ("stoi", stoi)):
        try:
            scores[name] = round(fn(reference=y, estimate=rec, sample_rate=cfg.sample_rate), 4)
        except MetricError as exc:
            scores[name] = None
            scores[f"{name}_error"] = str(exc)
    record.write_text(json.dumps(scores, indent=1) + "\n")
    return scores

"""The ``pipeline`` command: a thin Typer layer over the library functions.

Each command parses options, calls one function, prints what it did, and exits 1 when any item
failed (the failures CSV says which and why) or 2 for a usage error.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer
from rich.console import Console
from rich.markup import escape as _e

from pipeline.errors import PipelineError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Speech reconstruction from mel spectrograms, at corpus scale.\n\n"
                       "audio --extract--> store.zarr (mel) --invert--> (mag) --phase--> wavs "
                       "--score--> report.csv")
def _version(value: bool) -> None:
    if value:
        from pipeline import __version__
        print(f"pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Speech reconstruction from mel spectrograms, at corpus scale."""


train_app = typer.Typer(no_args_is_help=True, help="Train the learned models.")
app.add_typer(train_app, name="train")
cluster_app = typer.Typer(no_args_is_help=True, help="SLURM cluster profiles (dask-jobqueue).")
app.add_typer(cluster_app, name="cluster")
console = Console(stderr=True)


class Cluster(str, Enum):
    local = "local"
    slurm = "slurm"


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {_e(str(msg))}")
    raise typer.Exit(code)


class Method(str, Enum):
    pinv = "pinv"
    nnls = "nnls"
    model = "model"


class Algo(str, Enum):
    gla = "gla"
    fgla = "fgla"
    admm = "admm"
    degli = "degli"


class Project(str, Enum):
    auto = "auto"
    mel = "mel"
    mag = "mag"


class Source(str, Enum):
    auto = "auto"
    mag = "mag"
    mel = "mel"
    true = "true"


class Init(str, Enum):
    zeros = "zeros"
    random = "random"
    pghi = "pghi"


class Corpus(str, Enum):
    pocketsphinx = "pocketsphinx"
    asterisk = "asterisk"
    kde = "kde"
    festival = "festival"
    speed = "speed"


def command(group: typer.Typer = app, name: str | None = None):
    """``group.command(name)`` whose errors about the user's input (:class:`PipelineError`)
    end in one line and exit status 2; anything else is a bug and keeps its traceback."""
    def deco(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except PipelineError as exc:
                _fail(str(exc), getattr(exc, "exit_code", 2))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                _fail(f"no space left on device: {exc.filename or 'the output'}; free some space "
                      "and re-run the same command (finished work is kept)", 3)
        return group.command(name)(run)
    return deco


def _warn_clipped(res) -> None:
    """One warning line for outputs that clipped (their rows are in the run's report)."""
    if res.clipped:
        names = ", ".join(res.clipped[:3]) + (", ..." if len(res.clipped) > 3 else "")
        console.print(f"[yellow]warning:[/] {len(res.clipped)} output(s) clipped (over 0.1 % of "
                      f"samples beyond full scale: {_e(names)}); levels per item in "
                      f"{_e(str(res.report))}; --peak -1 scales each output to -1 dBFS")


def _report(res, what: str) -> None:
    rate = f", {res.audio_seconds / res.seconds:.1f}x real time" if res.audio_seconds and res.seconds else ""
    console.print(f"[green]{what}[/]: {res.done} utterance{'' if res.done == 1 else 's'} in "
                  f"{res.seconds:.1f} s{rate}; "
                  f"{res.skipped_shards} shard(s) already complete -> {_e(str(res.store))}")
    _warn_clipped(res)
    if res.failures:
        console.print(f"[bold red]{len(res.failures)} item(s) failed[/], listed in {_e(str(res.failures_csv))}:")
        for f in res.failures[:10]:
            console.print(f"  {_e(f.id)}: {_e(f.reason)}")
        raise typer.Exit(1)


def _positive(value: float, name: str) -> float:
    if not value > 0:
        raise typer.BadParameter(f"{value} is not > 0", param_hint=name)
    return value


def _momentum(value: float) -> float:
    if not 0 <= value < 1:
        raise typer.BadParameter(f"{value} is not in [0, 1) (0: plain GLA; 0.99: FGLA)",
                                 param_hint="--momentum")
    return value


@command()
def manifest(
    source: Path = typer.Argument(..., metavar="INPUT", help="A folder (searched recursively "
                                  "for audio files), a Kaldi wav.scp (with its segments file), "
                                  "or a lhotse RecordingSet / CutSet (.jsonl.gz)."),
    out: Path = typer.Option(None, "--out", "-o", help="Manifest to write (JSONL); default stdout."),
) -> None:
    """Write a JSONL manifest (id, path, sample_rate, channels, num_samples, duration)."""
    from pipeline.io.manifest import resolve_inputs, write_manifest

    utts, fails = resolve_inputs([source])
    if out:
        write_manifest(utts, out, [source])
        console.print(f"{len(utts)} utterances, {sum(u.duration or 0.0 for u in utts):.1f} s -> {_e(str(out))}")
    else:
        for u in utts:
            print(u.to_json())
    for f in fails:
        console.print(f"[red]skipped[/] {_e(f.path)}: {_e(f.reason)}")
    if fails:
        raise typer.Exit(1)


@command()
def prepare(
    corpus: Corpus = typer.Argument(..., metavar="CORPUS", help="pocketsphinx (test/demo corpus); asterisk, kde or "
                                 "festival (training: asterisk G.722 prompts; klettres + ktuberling "
                                 "words; festival diphone voices reading the asterisk prompts); "
                                 "or speed (perturbed copies of --manifest)."),
    out: Path = typer.Option(Path("data"), "--out", "-o",
                             help="pocketsphinx: manifest path; otherwise a folder for manifests (+ wavs)."),
    languages: str = typer.Option("en,fr,es", help="asterisk: comma-separated languages (en, fr, es: the training voices; ru, it: held out of training, for evaluation)."),
    manifest: Optional[Path] = typer.Option(None, help="speed: the manifest to perturb."),
    factors: str = typer.Option("0.9,1.1", help="speed: comma-separated speed factors."),
    voices: str = typer.Option("all", help="festival: comma-separated voices (kal, ked, cs-dita, "
                               "cs-krb, cs-machac, cs-ph, fi-lj, fi-mv) or all."),
    per_voice: int = typer.Option(300, min=1, help="festival: prompts each voice reads."),
) -> None:
    """Corpus recipes: locate the Debian-packaged corpora and write manifests.

    `speed` writes speed-perturbed copies of a manifest's utterances (Kaldi style: new pitch
    and formants, i.e. new pseudo-speakers) with ids ID_spFACTOR. `festival` synthesises the
    asterisk prompts' texts with festival's diphone voices (real speakers' diphones; needs
    `festival`, the festvox-* packages and asterisk-core-sounds-{en,fr,es}).
    """
    from pipeline.recipes import RecipeOptions
    from pipeline.recipes import prepare as run

    try:
        opts = RecipeOptions(languages=tuple(languages.split(",")), manifest=manifest,
                             factors=tuple(float(f) for f in factors.split(",")),
                             voices=None if voices == "all" else tuple(voices.split(",")),
                             per_voice=per_voice)
    except ValueError:
        raise typer.BadParameter(f"{factors!r} is not a comma-separated list of numbers",
                                 param_hint="--factors") from None
    res = run(corpus.value, out, opts)
    for name, p in res.manifests.items():
        console.print(f"{name}: {sum(1 for _ in open(p))} utterances -> {_e(str(p))}")
    if res.failures:
        console.print(f"[bold red]{len(res.failures)} item(s) could not be taken[/], listed in "
                      f"{_e(str(res.failures_csv))}:")
        for f in res.failures[:10]:
            console.print(f"  {_e(f.id)}: {_e(f.reason)}")
        raise typer.Exit(1)


@command()
def extract(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT...", help="A folder, a .jsonl manifest, a Kaldi wav.scp (+ segments), a lhotse RecordingSet/CutSet (.jsonl.gz), or audio files."),
    out: Path = typer.Option(..., "--out", "-o", help="The zarr store to write (STORE.zarr)."),
    config: ConfigName = "mel80-16k",
    with_mag: bool = typer.Option(False, "--with-mag", help="Also store true STFT magnitudes "
                                  "(training targets, phase-only evaluation)."),
    workers: Workers = 1,
    shard_seconds: float = typer.Option(60.0, callback=lambda v: _positive(v, "--shard-seconds"),
                                        help="Audio seconds per shard (unit of resume), > 0."),
    cluster: ClusterOpt = Cluster.local,
    profile: Profile = None,
    overwrite: bool = typer.Option(False, help="Replace an existing store instead of resuming."),
    quiet: Quiet = False,
) -> None:
    """Audio -> log-mel spectrograms in a zarr store. Resumable: re-run to finish a killed run."""
    from pipeline.config import load_config
    from pipeline.stages.extract import extract as run

    res = run(list(inputs), out, load_config(config), with_mag=with_mag, workers=workers,
              shard_seconds=shard_seconds, cluster=cluster.value, profile=profile,
              overwrite=overwrite, progress=not quiet)
    _report(res, "extracted")


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# Options shared by the stage commands: one spelling, one help text.
Workers = Annotated[int, typer.Option("--workers", "-j", min=1, help="Parallel worker processes "
                                      "(local: at most one per core; SLURM: jobs).")]
ClusterOpt = Annotated[Cluster, typer.Option(help="local processes or a SLURM cluster.")]
Profile = Annotated[Optional[str], typer.Option(help="Cluster profile (configs/cluster-*.toml "
                                                "or a TOML file).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
DeviceOpt = Annotated[Device, typer.Option(help="auto picks CUDA when available.")]


class Format(str, Enum):
    wav = "wav"
    flac = "flac"


class Subtype(str, Enum):
    PCM_16 = "PCM_16"
    PCM_24 = "PCM_24"
    FLOAT = "FLOAT"


FormatOpt = Annotated[Format, typer.Option("--format", help="Output audio: wav, or flac "
                                           "(lossless, about half the size).")]
SubtypeOpt = Annotated[Subtype, typer.Option("--subtype", help="Sample type: PCM_16, PCM_24, "
                                             "or FLOAT (wav only; keeps samples beyond full "
                                             "scale).")]
Peak = Annotated[Optional[float], typer.Option("--peak", help="Scale each output so that its "
                                               "peak sits at this many dBFS (e.g. -1), as "
                                               "Griffin-Lim tools' normalise options do. "
                                               "Default: the reconstruction's own level; "
                                               "samples beyond full scale are clipped and "
                                               "reported (the run's report, a warning).",
                                               max=0.0)]
Tol = Annotated[Optional[float], typer.Option(
    "--tol", min=0.0, help="Joint mel inversion: stop each utterance when its log-mel error "
    "improved by less than this fraction since the check 100 iterations before; --iters is "
    "then a maximum and the run's report lists the iterations each took. Default, on the "
    "joint route: 0.03 for mel80-16k (15-22 % fewer iterations at the same PESQ on held-out "
    "speech), 0.01 for mel250-16k, else 0; 0: every utterance runs --iters (BENCHMARKS.md, "
    "per-utterance stopping).")]
ConfigName = Annotated[str, typer.Option("--config", "-c", help="Preset name (configs/NAME.toml) "
                                         "or a TOML file.")]


@command()
def invert(
    store: Path = typer.Argument(..., metavar="STORE", help="Store written by `pipeline extract`."),
    method: Method = typer.Option(Method.pinv, "--method", "-m",
                               help="pinv (pseudo-inverse), nnls (non-negative least squares), "
                                    "or model (PInv + conv autoencoder, shipped weights). pinv "
                                    "is the default start of the joint phase route (`phase "
                                    "--project mel`), where the model gains nothing over it; "
                                    "with the magnitude held fixed (`--project mag`) use model."),
    weights: Optional[str] = typer.Option(None, help="Weights name (weights/NAME.pt) or path; "
                                          "default: the shipped ones matching the store's config."),
    device: DeviceOpt = Device.auto,
    batch_frames: int = typer.Option(1000, "--batch-frames", min=1, help="Padded frames per batch."),
    nnls_iters: int = typer.Option(50, help="Iterations of the NNLS solver (FISTA; 50 reach a "
                                   "relative mel residual of ~1e-5)."),
    workers: Workers = 1,
    cluster: ClusterOpt = Cluster.local,
    profile: Profile = None,
    overwrite: bool = typer.Option(False, help="Recompute shards already inverted."),
    quiet: Quiet = False,
) -> None:
    """Mel -> linear STFT magnitude, written into the store as `mag`. Resumable."""
    from pipeline.stages.invert import invert as run

    res = run(store, method.value, weights=weights, device=device.value, workers=workers,
              batch_frames=batch_frames, n_iter=nnls_iters, cluster=cluster.value,
              profile=profile, overwrite=overwrite, progress=not quiet)
    _report(res, f"inverted ({method.value})")


@command()
def phase(
    store: Path = typer.Argument(..., metavar="STORE", help="Store from `pipeline extract` (and, if run, "
                                 "`pipeline invert`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <utterance id>.wav files."),
    algo: Algo = typer.Option(Algo.fgla, "--algo", "-a", help="gla, fgla (momentum 0.99), admm "
                             "(joint mel inversion by ADMM, Masuyama et al. 2025; magnitude "
                             "mels) or degli (Deep Griffin-Lim; shipped net for mel80-16k: "
                             "learned first 8 iterations, FGLA after; ~28x slower per iteration "
                             "on CPU, no better than fgla per second: BENCHMARKS.md)."),
    iters: Optional[int] = typer.Option(None, "--iters", "-n", min=0, help="Iterations (degli: "
                                        "blocks). Default: 800 on the joint route (--project "
                                        "mel; a maximum with --tol), 100 with the magnitude "
                                        "fixed (BENCHMARKS.md)."),
    project: Project = typer.Option(Project.auto, "--project", help="What each iteration projects onto: "
                                "mel (joint mel inversion: the magnitude from invert is only the "
                                "start, refined within the store's mel; +0.2-0.6 PESQ on 80 mels) "
                                "or mag (hold the magnitude fixed: phase-only evaluation). auto: "
                                "mel, except with --source true, --algo degli or frames that "
                                "overlap by less than 75 % (BENCHMARKS.md)."),
    source: Source = typer.Option(Source.auto, help="auto (mag when `pipeline invert` has run, else "
                               "mel), mag (what invert wrote), mel (invert in memory with "
                               "--method, batch by batch: no magnitude is written, the store "
                               "stays smaller than the audio) or true (stored true magnitude: "
                               "phase-only evaluation)."),
    method: Method = typer.Option(Method.pinv, help="--source mel: pinv, nnls or model."),
    invert_weights: Optional[str] = typer.Option(None, "--invert-weights", help="--source mel "
                                                 "--method model: inverter weights (default: "
                                                 "shipped, matching the store)."),
    init: Init = typer.Option(Init.zeros, help="Initial phase: zeros, random, or pghi (phase-gradient "
                             "integration: better start, fewer iterations needed)."),
    momentum: float = typer.Option(0.99, callback=lambda v: _momentum(v),
                                   help="FGLA momentum, in [0, 1)."),
    weights: Optional[str] = typer.Option(None, help="DeGLI weights (default: shipped, matching the store)."),
    warmup: Optional[int] = typer.Option(None, min=0, help="DeGLI: FGLA iterations before the "
                                         "--iters DeGLI blocks (default: the regime the weights "
                                         "were trained for, in their card)."),
    device: DeviceOpt = Device.auto,
    batch_frames: Optional[int] = typer.Option(None, "--batch-frames", min=1, help="Padded frames per batch "
                                     "(default: 256 on CPU, where small batches stay in cache; 16384 on CUDA)."),
    seed: int = typer.Option(0, help="Seed of the random initial phase."),
    workers: Workers = 1,
    cluster: ClusterOpt = Cluster.local,
    profile: Profile = None,
    quiet: Quiet = False,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the wavs of an earlier "
                                   "run with other settings (only this store's <id>.wav files, "
                                   "failures.csv and the run record are removed)."),
    peak: Peak = None,
    tol: Tol = None,
    audio_format: FormatOpt = Format.wav,
    subtype: SubtypeOpt = Subtype.PCM_16,
) -> None:
    """Magnitude -> waveform, one wav per utterance. Resumable.

    Existing wavs are kept when the store and every setting match the run that wrote them
    (WAV_DIR/.pipeline-run.json)."""
    from pipeline.stages.phase import phase as run

    res = run(store, out, algo.value, n_iter=iters, source=source.value, init=init.value, device=device.value,
              workers=workers, batch_frames=batch_frames, seed=seed, cluster=cluster.value,
              profile=profile, progress=not quiet, project=project.value, overwrite=overwrite,
              momentum=momentum, weights=weights, warmup=warmup, method=method.value,
              invert_weights=invert_weights, peak_dbfs=peak, tol=tol, audio_format=audio_format.value,
              subtype=subtype.value)
    _report(res, f"reconstructed ({algo.value}{f', {iters} iterations' if iters is not None else ''}, "
                 f"--project {project.value})")


@command()
def run(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT...", help="A folder, a .jsonl manifest, a Kaldi wav.scp (+ segments), a lhotse RecordingSet/CutSet (.jsonl.gz), or audio files."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for mels.zarr, wav/ and "
                             "(with --score) report.csv."),
    config: ConfigName = "mel80-16k",
    method: Method = typer.Option(Method.pinv, help="Mel -> magnitude: pinv, nnls or model."),
    invert_weights: Optional[str] = typer.Option(None, "--invert-weights", help="--method "
                                                 "model: inverter weights (default: shipped)."),
    algo: Algo = typer.Option(Algo.fgla, "--algo", "-a", help="Phase algorithm: gla, fgla, admm "
                              "(degli holds the magnitude fixed: use `pipeline phase`)."),
    iters: Optional[int] = typer.Option(None, "--iters", "-n", min=0, help="Phase iterations "
                                        "(default: 800 joint, a maximum with --tol; 100 with the "
                                        "magnitude fixed)."),
    project: Project = typer.Option(Project.auto, "--project", help="auto, mel (joint mel inversion) "
                                "or mag (magnitude fixed): as `pipeline phase`."),
    keep_mag: bool = typer.Option(False, "--keep-mag", help="Also write the inverted "
                                  "magnitudes into the store (`pipeline invert`); by default "
                                  "they live in memory only and the store holds the mel."),
    score: bool = typer.Option(False, "--score", help="Score the wavs against the input audio."),
    metrics: Optional[str] = typer.Option(None, help="--score: comma-separated metrics "
                                          "(default: those of `pipeline score`)."),
    workers: Workers = 1,
    cluster: ClusterOpt = Cluster.local,
    profile: Profile = None,
    device: DeviceOpt = Device.auto,
    quiet: Quiet = False,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace what an earlier run "
                                   "with other settings left in --out."),
    peak: Peak = None,
    tol: Tol = None,
    audio_format: FormatOpt = Format.wav,
    subtype: SubtypeOpt = Subtype.PCM_16,
) -> None:
    """Audio -> mels -> waveforms [-> scores] in one process and one cluster. Resumable.

    Extract, then phase inverting the mel in memory (or invert with --keep-mag), then score.
    Re-run the same command to finish a killed run."""
    from pipeline.config import load_config
    from pipeline.stages.run import run as run_stages

    res = run_stages(list(inputs), out, load_config(config), method=method.value,
                     invert_weights=invert_weights, algo=algo.value, n_iter=iters,
                     project=project.value,
                     keep_mag=keep_mag, score=score,
                     metrics=metrics.split(",") if metrics else None, workers=workers,
                     cluster=cluster.value, profile=profile, device=device.value,
                     progress=not quiet, overwrite=overwrite, peak_dbfs=peak, tol=tol,
                     audio_format=audio_format.value, subtype=subtype.value)
    for name, r in res.stages.items():
        console.print(f"[green]{name}[/]: {r.done} utterance(s) in {r.seconds:.1f} s; "
                      f"{r.skipped_shards} shard(s) already complete")
        _warn_clipped(r)
        if r.failures:
            console.print(f"  [bold red]{len(r.failures)} item(s) failed[/], listed in "
                          f"{_e(str(r.failures_csv))}")
    if res.score is not None:
        print(res.score.markdown)
    console.print(f"done in {res.seconds:.1f} s -> {_e(str(out))}")
    if not res.ok:
        raise typer.Exit(1)


@command()
def score(
    hyp: Path = typer.Option(..., "--hyp", help="Folder of reconstructed wavs."),
    out: Path = typer.Option(..., "--out", "-o", help="Per-utterance CSV (summary beside it)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference wav folder or store; "
                                       "omit for non-intrusive metrics only (DNSMOS)."),
    metrics: Optional[str] = typer.Option(None, help="Comma-separated; default: pesq_wb, stoi, "
                                          "estoi, si_sdr, spectral_convergence, lsd, mcd "
                                          "(dnsmos_ovrl without --ref). Also pesq_nb, lsd_db, "
                                          "mcd_plain, dnsmos_sig, dnsmos_bak. lsd: NU-Wave's "
                                          "definition (STFT 2048/512, log10 power clamped at "
                                          "1e-8; log10 units, 1/10 of dB). mcd: ESPnet's recipe "
                                          "(pysptk mel-cepstra c0..c23, alpha 0.42 at 16 kHz, "
                                          "c0..c34 at 22.05/24 kHz; fastdtw alignment), dB; "
                                          "mcd_plain without alignment. With references at "
                                          "another rate, every metric is computed at the lower "
                                          "of the two rates."),
    workers: Workers = 1,
    cluster: ClusterOpt = Cluster.local,
    profile: Profile = None,
    plot: bool = typer.Option(False, "--plot/--no-plot", help="Also write PNGs: histograms, "
                              "best/worst spectrograms."),
    align: bool = typer.Option(False, "--align/--no-align", help="Shift a hypothesis that is "
                               "late or early against its reference (found by cross-correlation, "
                               "reported in the lag_ms column) into place before scoring; "
                               "without it such items are flagged and get no scores."),
    quiet: Quiet = False,
) -> None:
    """Objective metrics per utterance (CSV), a summary CSV and a Markdown table."""
    from pipeline.stages.score import score as run

    res = run(hyp, out, ref, metrics.split(",") if metrics else None, workers=workers,
              cluster=cluster.value, profile=profile, progress=not quiet, plot=plot, align=align)
    print(res.markdown)
    console.print(f"{len(res.rows)} utterances scored in {res.seconds:.1f} s -> {_e(str(res.csv))}, "
                  f"{_e(str(res.summary_csv))}" + (f", {len(res.plots)} plots" if res.plots else ""))
    if res.failures:
        console.print(f"[bold red]{res.failures} utterance(s) have NaN metrics[/]; "
                      f"see the error column of {_e(str(res.csv))}")
        raise typer.Exit(1)


LOG_UNITS = {"ln": "nepers", "log10": "decades", "db": "dB", "none": "linear mel units"}


class MelScale(str, Enum):
    slaney = "slaney"
    htk = "htk"


class Norm(str, Enum):
    slaney = "slaney"
    none = "none"


class LogKind(str, Enum):
    ln = "ln"
    log10 = "log10"
    db = "db"
    none = "none"


def _convention(preset: str, **overrides):
    """A preset with the command line's overrides (``--sr``, ``--hop``, ...) applied."""
    from pipeline.config import load_config, with_overrides

    renames = {"sr": "sample_rate", "hop": "hop_length", "win": "win_length"}
    return with_overrides(load_config(preset), **{
        renames.get(k, k): (v.value if isinstance(v, Enum) else v) for k, v in overrides.items()})


@command()
def vocode(
    mels: Path = typer.Argument(..., metavar="MELS", help="Mels: a folder of .npy/.npz/.pt/.h5 files (HiFi-GAN, FastSpeech, Matcha; ParallelWaveGAN dumps), one such file, a feats.scp (ESPnet2's npy paths, or Kaldi ark offsets), or a bare .ark (Kaldi)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <id>.wav and vocode-report.csv."),
    preset: str = typer.Option("hifigan-22k", help="Mel convention: a configs/ name or TOML path."),
    method: Method = typer.Option(Method.pinv, help="pinv, nnls or model (the start of the phase "
                               "iterations; pinv is as good as model on the joint route)."),
    weights: Optional[str] = typer.Option(None, help="Inversion weights (default: shipped for the preset)."),
    algo: Algo = typer.Option(Algo.fgla, help="Phase algorithm: gla, fgla, admm or degli."),
    iters: Optional[int] = typer.Option(None, min=0, help="Phase iterations (default: 800 joint, "
                                        "a maximum with --tol; 100 with the magnitude fixed)."),
    project: Project = typer.Option(Project.auto, "--project", help="mel: refine the magnitude within the "
                                "input mel while iterating (joint mel inversion); mag: hold it "
                                "fixed; auto: mel where frames overlap by >= 75 %."),
    sr: Optional[int] = typer.Option(None, "--sr", help="Override: sample rate."),
    n_fft: Optional[int] = typer.Option(None, "--n-fft", help="Override: FFT size."),
    hop: Optional[int] = typer.Option(None, "--hop", help="Override: hop length."),
    win: Optional[int] = typer.Option(None, "--win", help="Override: window length."),
    n_mels: Optional[int] = typer.Option(None, "--n-mels", help="Override: number of mels."),
    fmin: Optional[float] = typer.Option(None, "--fmin", help="Override: lowest mel frequency."),
    fmax: Optional[float] = typer.Option(None, "--fmax", help="Override: highest mel frequency."),
    log: Optional[LogKind] = typer.Option(None, "--log", help="Override: ln, log10, db or none."),
    clamp: Optional[float] = typer.Option(None, "--clamp", help="Override: floor before the log."),
    power: Optional[float] = typer.Option(None, "--power", help="Override: 1 magnitude, 2 power."),
    mel_scale: Optional[MelScale] = typer.Option(None, "--mel-scale", help="Override: slaney or htk."),
    norm: Optional[Norm] = typer.Option(None, "--norm", help="Override: slaney or none."),
    center: Optional[bool] = typer.Option(None, "--center/--no-center", help="Override: centred frames."),
    device: DeviceOpt = Device.auto,
    workers: Workers = 1,
    quiet: Quiet = False,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the wavs of an earlier "
                                   "run with other settings (only the <id>.wav files of these "
                                   "mels, failures.csv and the run record are removed)."),
    stats: Optional[Path] = typer.Option(None, "--stats", help="Normalisation statistics of "
                                         "normalised features, to denormalise them: ESPnet's "
                                         "feats_stats.npz (count, sum, sum_square), or a .npy "
                                         "of two rows, mean and scale (ParallelWaveGAN). Mels "
                                         "that look normalised are refused without it."),
    peak: Peak = None,
    tol: Tol = None,
    audio_format: FormatOpt = Format.wav,
    subtype: SubtypeOpt = Subtype.PCM_16,
) -> None:
    """TTS mels -> wavs (invert + phase), with a round-trip mel check in the report. Resumable.

    Existing wavs are kept when the input and every setting match the run that wrote them."""
    from pipeline.stages.vocode import vocode as run

    cfg = _convention(preset, sr=sr, n_fft=n_fft, hop=hop, win=win, n_mels=n_mels, fmin=fmin,
                      fmax=fmax, log=log, clamp=clamp, power=power, mel_scale=mel_scale,
                      norm=norm, center=center)
    res = run(mels, out, cfg, method=method.value, weights=weights, algo=algo.value, n_iter=iters,
              device=device.value, workers=workers, progress=not quiet, project=project.value,
              overwrite=overwrite, stats=stats, peak_dbfs=peak, tol=tol, audio_format=audio_format.value,
              subtype=subtype.value)
    console.print(f"[green]vocoded[/] {res.done} file(s) ({res.audio_seconds:.1f} s of audio) in "
                  f"{res.seconds:.1f} s, {res.skipped} already done -> {_e(str(res.store))}")
    if res.report:
        console.print(f"round trip: mean |mel(out) - mel(in)| = {res.mel_l1_mean:.3f} "
                      f"({LOG_UNITS[cfg.log]}, from the files as written); per file in "
                      f"{_e(str(res.report))}")
    _warn_clipped(res)
    if res.failures:
        console.print(f"[bold red]{len(res.failures)} file(s) failed[/], listed in {_e(str(res.failures_csv))}:")
        for f in res.failures[:10]:
            console.print(f"  {_e(f.reason)}")
        raise typer.Exit(1)


@command()
def predict(
    audio: Path = typer.Argument(..., metavar="AUDIO", help="An audio file."),
    out: Path = typer.Option(Path("predict-out"), "--out", "-o", help="Output folder."),
    config: str = typer.Option("mel80-16k", "--config", "-c", help="Mel convention."),
    method: Method = typer.Option(Method.pinv, help="pinv, nnls or model."),
    weights: Optional[str] = typer.Option(None, help="Inversion weights."),
    algo: Algo = typer.Option(Algo.fgla, help="Phase algorithm."),
    iters: Optional[int] = typer.Option(None, min=0, help="Phase iterations (default: 800 joint, "
                                        "a maximum with --tol; 100 with the magnitude fixed)."),
    project: Project = typer.Option(Project.auto, "--project", help="mel (joint mel inversion), mag or auto."),
    device: DeviceOpt = Device.auto,
    peak: Peak = None,
    tol: Tol = None,
    audio_format: FormatOpt = Format.wav,
    subtype: SubtypeOpt = Subtype.PCM_16,
) -> None:
    """One file: audio -> mel -> reconstruction. Writes the wav, a spectrogram PNG and PESQ/STOI JSON."""
    from pipeline.config import load_config
    from pipeline.stages.predict import predict as run

    res = run(audio, out, load_config(config), method=method.value, weights=weights,
              algo=algo.value, n_iter=iters, device=device.value, project=project.value,
              peak_dbfs=peak, tol=tol, audio_format=audio_format.value, subtype=subtype.value)
    print(json.dumps(res, indent=1))


@command(train_app, "degli")
def train_degli(
    train: Path = typer.Option(..., "--train", help="Training store (its source audio is read)."),
    val: Path = typer.Option(..., "--val", help="Validation store."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; its name names the weights."),
    epochs: int = typer.Option(30),
    steps: int = typer.Option(100, help="Steps per epoch."),
    channels: int = typer.Option(8, help="Width of the residual net (a block of 8 channels "
                                 "costs ~28 FGLA iterations on CPU: benchmarks/checks/degli_cost.py)."),
    warmup: int = typer.Option(100, help="FGLA iterations before the blocks at inference "
                               "(validation uses this; training samples --train-warmup)."),
    train_warmup: Tuple[int, int] = typer.Option((20, 200), "--train-warmup", help="Range of "
                                                 "FGLA iterations before the trained block(s)."),
    momentum: float = typer.Option(0.0, help="Chain the blocks with FGLA's momentum (0.99 as "
                                   "in fgla): a zero residual is then FGLA, not GLA."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    train_init: List[str] = typer.Option(["random", "zeros"], "--train-init", help="Initial "
                                         "phases of the training iterates (repeatable)."),
    unroll: int = typer.Option(1, help="Blocks per training example (> 1: trained as a chain, "
                               "loss = mean inconsistency over the blocks; true magnitudes)."),
    after_model: Optional[str] = typer.Option(None, "--after-model", help="Train for the "
                                              "magnitudes of these inversion weights (name or "
                                              "path) instead of true ones: the blocks may then "
                                              "correct the magnitude too."),
    seed: int = typer.Option(0),
    quiet: Quiet = False,
) -> None:
    """Train the DeGLI residual network. Re-run the same command to resume.

    It learns on FGLA iterates of the stores' STFTs (true magnitudes, or the learned inverter's
    with --after-model)."""
    from pipeline.models.degli import DeGLIConfig
    from pipeline.train.degli import DeGLITrainConfig
    from pipeline.train.degli import train_degli as run

    hp = DeGLIConfig(channels=channels, warmup=warmup, momentum=momentum,
                     magnitude="model" if after_model else "true", invert_weights=after_model)
    tc = DeGLITrainConfig(epochs=epochs, steps_per_epoch=steps, seed=seed, unroll=unroll, lr=lr,
                          inits=tuple(train_init),
                          warmup_range=(train_warmup[0], train_warmup[1]))
    card = run(train, val, out, tc, hp, progress=not quiet)
    console.print(f"best epoch {card['best_epoch']}: {card['validation']} -> {out / (out.name + '.pt')}")
    if not card["validation"]["beats_zero_residual"]:
        console.print("[yellow]warning: no epoch beat the zero-residual net (plain GLA/FGLA "
                      "steps) on validation: these weights are no better than --algo fgla")


@command(train_app, "invert")
def train_invert(
    train: Path = typer.Option(..., "--train", help="Training store (extract --with-mag)."),
    val: Path = typer.Option(..., "--val", help="Validation store (extract --with-mag)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; its name names the weights "
                             "(checkpoint, loss_curve.png, NAME.pt + NAME.json)."),
    epochs: int = typer.Option(30, help="Maximum epochs."),
    steps: int = typer.Option(150, help="Steps per epoch."),
    batch_size: int = typer.Option(32),
    crop: int = typer.Option(64, help="Frames per training crop."),
    lr: float = typer.Option(2e-3),
    patience: int = typer.Option(6, help="Early stopping: epochs without validation gain."),
    channels: int = typer.Option(128, help="Model width."),
    depth: int = typer.Option(2, help="Stride-2 stages of the U-Net."),
    kernel: int = typer.Option(5, help="Convolution length over time (frames)."),
    threads: int = typer.Option(0, help="torch threads (0: all cores; 1 leaves a core free)."),
    loss_floor: float = typer.Option(0.01, help="Training loss: L1 of log(magnitude + floor) "
                                     "(+ spectral convergence); larger = quiet bins count less."),
    over_weight: float = typer.Option(1.0, "--over-weight", help="Training loss: log errors "
                                      "above the truth weigh this many times those below (1: "
                                      "plain L1; > 1 keeps the gaps between harmonics deeper)."),
    ema: float = typer.Option(0.998, help="Decay of the weight average that is validated and "
                              "exported (0: the raw weights)."),
    refine: str = typer.Option("", "--refine", help="What follows the net at inference, recorded "
                               "in the weights' card: nothing (default), or lobes (the low "
                               "harmonics sharpened by window lobes fitted to the low mel bands). "
                               "Training and validation are the same either way."),
    init: Optional[str] = typer.Option(None, "--init", help="Fine-tune: start from these "
                                       "weights (a name in weights/ or a .pt path); the "
                                       "architecture is theirs (--channels, --depth and "
                                       "--kernel are ignored), --refine is this run's."),
    lowband: int = typer.Option(0, "--lowband", help="Channels of a 2-D conv net over (time, "
                                "frequency) refining the bins below --lowband-hz (0: none). "
                                "With --init weights that have none: added to them and "
                                "trained alone, the rest frozen (weights that have one keep "
                                "theirs, and everything trains)."),
    lowband_layers: int = typer.Option(4, "--lowband-layers", help="Its hidden layers."),
    lowband_hz: float = typer.Option(1250.0, "--lowband-hz", help="It refines the bins below "
                                     "this frequency (Hz, > 1000)."),
    lowband_time_kernel: int = typer.Option(3, "--lowband-time-kernel", help="Its hidden "
                                            "convs' extent over time (frames)."),
    keep_epochs: bool = typer.Option(False, "--keep-epochs", help="Also keep every epoch's "
                                     "weights (OUT/epochs/NAME-eNNN.pt + card, ~2.5 MB each, "
                                     "usable as --weights) to choose an epoch by PESQ on "
                                     "held-out speech rather than by the validation loss."),
    seed: int = typer.Option(0),
    quiet: Quiet = False,
) -> None:
    """Train the PInv + conv autoencoder inverter. Re-run the same command to resume."""
    from pipeline.models.inverter import ModelConfig
    from pipeline.train.invert import TrainConfig
    from pipeline.train.invert import train_invert as run

    card = run(train, val, out, TrainConfig(epochs=epochs, steps_per_epoch=steps,
               batch_size=batch_size, crop=crop, lr=lr, patience=patience, seed=seed,
               loss_floor=loss_floor, ema=ema, threads=threads,
               over_weight=over_weight, init=init or ""),
               ModelConfig(channels=channels, depth=depth, kernel=kernel,
                           refine=refine, lowband=lowband, lowband_layers=lowband_layers,
                           lowband_hz=lowband_hz, lowband_time_kernel=lowband_time_kernel),
               progress=not quiet, keep_epochs=keep_epochs)
    v, b = card["validation"], card["validation_baselines"]
    console.print(f"best epoch {card['best_epoch']}: validation SC {v['sc']:.3f}, LSD "
                  f"{v['lsd_db']:.2f} dB (pinv SC {b['pinv']['sc']:.3f}, nnls SC {b['nnls']['sc']:.3f})"
                  f" -> {out / (out.name + '.pt')}")


@command()
def info(store: Path = typer.Argument(..., metavar="STORE", help="A store written by `pipeline extract`.")) -> None:
    """Summarise a store: config, utterances, arrays and completion of each stage."""
    from pipeline.io.store import Store, summary

    s = summary(Store(store))
    cfg = s["config"]
    print(f"store      {s['path']}")
    print(f"config     {cfg.name}: {cfg.sample_rate} Hz, n_fft {cfg.n_fft}, hop {cfg.hop_length}, "
          f"{cfg.n_mels} mels, log {cfg.log}")
    print(f"utterances {s['utterances']} ({s['seconds']:.1f} s), {s['shards']} shards")
    for stage, done in s["complete"].items():
        print(f"{stage:10} {done}/{s['shards']} shards complete")
    for why in s["damaged"].values():
        print(f"damaged    {why}")
    print("failures   " + ", ".join(f"{stage} {n}" + (f" ({path})" if n else "")
                                    for stage, (n, path) in s["failures"].items()))
    if s["damaged"]:
        raise typer.Exit(1)


@command(cluster_app, "script")
def cluster_script(
    profile: str = typer.Option("slurm-local", help="configs/cluster-NAME.toml or a TOML path."),
) -> None:
    """Print the SLURM job script dask-jobqueue would submit for a profile."""
    from pipeline.parallel.cluster import job_script

    print(job_script(profile))


def main() -> None:
    """The ``pipeline`` command (console script and ``python -m pipeline.cli``)."""
    import warnings

    # torch's and librosa's advice to developers (deprecations, empty mel filters of a preset
    # the user chose) is not for the command's user: a run's problems are reported in words
    for module in ("torch", "librosa", "pysptk", "speechmos"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    try:
        app()
    except SystemExit as exc:
        if exc.code == 130:     # typer's exit on Ctrl-C, which it leaves silent
            console.print("interrupted: finished work is kept; re-run the same command to resume")
            _close_clusters_quietly()
        _leave(exc)
        raise


def _leave(exc: SystemExit) -> None:
    """Exit with ``exc``'s status without the interpreter's teardown, once the command is over.

    Tearing down a process that imported torch takes ~1.4 s on the 2-vCPU VM (freeing every
    module and running libtorch's static destructors; 4.4 vs 2.9 s for a process that only
    imports the package), 6 % of a 10-minute mel -> wav run, for nothing: the command's files
    are closed by then. Everything that matters at exit still runs first: other threads must
    have ended (else the normal exit, which waits for them), the atexit hooks run (logging's
    flush, dask's cluster closing), and stdout/stderr are flushed. A status that is not an int
    (a message) takes the normal exit, which prints it."""
    import atexit
    import threading

    code = 0 if exc.code is None else exc.code
    if not isinstance(code, int) or any(t.is_alive() and not t.daemon
                                        for t in threading.enumerate()
                                        if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe: nothing more can reach it anyway
            pass
    os._exit(code)


def _close_clusters_quietly() -> None:
    """Close the dask clusters an interrupt left open (one interrupted while starting is
    never entered, so no ``with`` closes it) here, silently, instead of dask's exit hook,
    which printed a 30-line traceback for a worker still starting."""
    import atexit
    import contextlib
    import logging

    spec = sys.modules.get("distributed.deploy.spec")
    if spec is None:
        return
    atexit.unregister(spec.close_clusters)
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    for cluster in list(spec.SpecCluster._instances):
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)



if __name__ == "__main__":
    main()

"""Corpus manifests (JSONL, one utterance a line) and corpus recipes.

A manifest line: ``{"id", "path", "sample_rate", "channels", "num_samples", "duration"}``.
The id of a file found in a folder is its path relative to the folder, without extension,
with ``/`` separators (so nested folders keep distinct ids).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from pipeline.errors import PipelineError
from pipeline.io.audio import AUDIO_EXTENSIONS, AudioError, info
from pipeline.io.results import Failure, claim_file, first_line

POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")
# The utterances of pocketsphinx-testdata: 10 wav files and 4 headerless 16 kHz int16 files.
POCKETSPHINX_RAW = ("goforward.raw", "numbers.raw", "something.raw", "tidigits/dhd.2934z.raw")
ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
KDE_DIRS = {"klettres": (Path("/usr/share/klettres"), "klettres-data"),
            "ktuberling": (Path("/usr/share/ktuberling/sounds"), "ktuberling-data")}
ASTERISK_VOICES = {"en": "en_US_f_Allison", "fr": "fr_CA_f_June", "es": "es_MX_f_Allison",
                   "ru": "ru_RU_f_IvrvoiceRU"}


class ManifestError(PipelineError, ValueError):
    """A manifest or corpus could not be read; the message names the file."""


@dataclass(frozen=True)
class Utterance:
    id: str
    path: str
    sample_rate: int | None = None
    channels: int | None = None
    num_samples: int | None = None
    duration: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def utterance_id(path: Path, root: Path | None) -> str:
    rel = path.relative_to(root) if root is not None else Path(path.name)
    return rel.with_suffix("").as_posix()


# Audio containers we cannot decode: a file with one of these is an input that fails (with how
# to convert it), not a file to pass over in silence like a README.
UNSUPPORTED_AUDIO = (".m4a", ".aac", ".mp4", ".wma", ".webm", ".amr", ".3gp", ".caf", ".ape",
                     ".wv", ".ac3")


def scan_folder(root: str | Path, extensions: Iterable[str] = AUDIO_EXTENSIONS,
                problems: list[tuple[Path, str]] | None = None,
                exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Audio files below ``root`` (sorted), by extension (case-insensitive).

    ``problems``, when given, receives ``(path, reason)`` for what could not be taken: a
    folder that cannot be listed (permission denied) and audio in a format we cannot read.
    ``exclude``: folders left out of the search (a run's own output inside its input)."""
    root = Path(root)
    exts = {e.lower() for e in extensions}
    skip = {Path(e).resolve() for e in exclude}
    found = []

    def unreadable(err: OSError) -> None:
        if problems is not None:
            why = "permission denied" if isinstance(err, PermissionError) else err.strerror
            problems.append((Path(err.filename), f"{why}: {err.filename} (its files are not read)"))

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (skip and (Path(folder) / d).resolve() in skip))
        # a folder named like audio is an input that fails ("is a directory"), and is searched
        for name in [*files, *(d for d in dirs if Path(d).suffix.lower() in exts)]:
            p = Path(folder) / name
            suffix = p.suffix.lower()
            if name.startswith("."):
                continue
            if suffix in exts:
                found.append(p)
            elif problems is not None and suffix in UNSUPPORTED_AUDIO:
                problems.append((p, f"{p}: {suffix} audio cannot be read; convert it first "
                                    f"(ffmpeg -i '{p.name}' '{p.stem}.wav')"))
    return sorted(found)


def describe(path: Path, uid: str) -> tuple[Utterance | None, Failure | None]:
    """Read the header of ``path``; a failure instead of an exception for bad files."""
    try:
        meta = info(path)
    except AudioError as exc:
        return None, Failure(uid, str(path), "manifest", str(exc))
    if meta["num_samples"] == 0:
        return None, Failure(uid, str(path), "manifest", f"{path}: contains no samples")
    # absolute: a store keeps its sources, and is read from other working directories
    return Utterance(uid, os.path.abspath(path), meta["sample_rate"], meta["channels"],
                     meta["num_samples"], round(meta["duration"], 6)), None


def manifest_from_paths(paths: Iterable[str | Path], root: str | Path | None = None
                        ) -> tuple[list[Utterance], list[Failure]]:
    utts: list[Utterance] = []
    fails: list[Failure] = []
    root = Path(root) if root is not None else None
    for p in paths:
        p = Path(p)
        u, f = describe(p, utterance_id(p, root))
        if u is not None:
            utts.append(u)
        elif f is not None:
            fails.append(f)
    dupes = sorted(i for i, n in Counter(u.id for u in utts).items() if n > 1)
    if dupes:
        raise ManifestError(f"duplicate utterance ids {dupes[:5]}: two inputs map to the same id; "
                            "pass a folder (ids are relative paths) or a manifest with unique ids")
    return utts, fails


def manifest_from_folder(root: str | Path, exclude: Iterable[str | Path] = ()
                         ) -> tuple[list[Utterance], list[Failure]]:
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a folder")
    problems: list[tuple[Path, str]] = []
    files = scan_folder(root, problems=problems, exclude=exclude)
    skipped = [Failure(utterance_id(p, root) if p != root else str(p), str(p), "manifest", why)
               for p, why in problems]
    if not files:
        raise ManifestError(f"{root}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)})"
                            + (f"; {skipped[0].reason}" if skipped else ""))
    utts, fails = manifest_from_paths(files, root)
    return utts, skipped + fails


def check_id(uid: str) -> str | None:
    """Why ``uid`` cannot name an output file (``<out>/<id>.wav``), or None when it can: no
    absolute path, no ``..`` or empty component, no NUL or backslash."""
    if "\x00" in uid:
        return "contains a NUL character"
    if "\\" in uid:
        return "contains a backslash"
    if uid.startswith("/") or (len(uid) > 1 and uid[1] == ":"):
        return "is an absolute path"
    parts = uid.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' path component"
    return None


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a JSONL manifest. Relative paths are resolved against the manifest's folder."""
    path = Path(path)
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            u = Utterance(**{k: d.get(k) for k in Utterance.__dataclass_fields__})
        except (json.JSONDecodeError, TypeError) as exc:
            raise ManifestError(f"{path}:{n}: not a manifest line ({exc})") from exc
        if not u.id or not u.path:
            raise ManifestError(f"{path}:{n}: each line needs 'id' and 'path'")
        why = check_id(str(u.id))
        if why:
            raise ManifestError(f"{path}:{n}: id {u.id!r} {why}; ids become file names under "
                                "--out, so they must be relative paths inside it")
        if not os.path.isabs(u.path):
            u = Utterance(**{**asdict(u), "path": str((path.parent / u.path).resolve())})
        out.append(u)
    ids = [u.id for u in out]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{path}: utterance ids are not unique")
    return out


def is_manifest(path: Path) -> bool:
    """Whether ``path`` reads as a manifest this tool wrote (empty, or a first line that is a
    JSON object with ``id`` and ``path``): :func:`write_manifest` replaces nothing else."""
    line = first_line(path)
    if not line:
        return path.stat().st_size == 0
    try:
        d = json.loads(line)
    except ValueError:
        return False
    return isinstance(d, dict) and "id" in d and "path" in d


def write_manifest(utts: Iterable[Utterance], path: str | Path,
                   inputs: Iterable[str | Path] = ()) -> Path:
    """Write a JSONL manifest atomically; refuse a path that is one of ``inputs`` or an
    existing file that is not a manifest (:func:`pipeline.io.results.claim_file`)."""
    path = claim_file(path, list(inputs), is_manifest, "manifest")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(u.to_json() + "\n" for u in utts), encoding="utf-8")
    os.replace(tmp, path)
    return path


def resolve_inputs(inputs: list[str | Path], exclude: Iterable[str | Path] = ()
                   ) -> tuple[list[Utterance], list[Failure]]:
    """A folder, a ``.jsonl`` manifest, or audio files -> utterances (+ header failures).
    ``exclude``: folders a folder's search leaves out."""
    if not inputs:
        raise ManifestError("no input given: pass a folder, a .jsonl manifest, or audio files")
    if len(inputs) == 1:
        p = Path(inputs[0])
        if p.is_dir():
            return manifest_from_folder(p, exclude)
        if p.suffix == ".jsonl":
            return read_manifest(p), []
        if not p.exists():
            raise ManifestError(f"{p}: no such file or folder")
    return manifest_from_paths(inputs)


# --------------------------------------------------------------------------- recipes


def _need(path: Path, package: str) -> None:
    if not path.is_dir():
        raise ManifestError(f"{path} not found: install the Debian package with "
                            f"`apt-get install {package}` (or `make setup`)")


def prepare_pocketsphinx(out: str | Path | None = None, root: Path = POCKETSPHINX_DIR) -> list[Utterance]:
    """The test/demo corpus: pocketsphinx-testdata's 10 wavs and 4 raw 16 kHz int16 files."""
    _need(root, "pocketsphinx-testdata")
    files = scan_folder(root, (".wav",)) + [root / r for r in POCKETSPHINX_RAW if (root / r).exists()]
    utts, fails = manifest_from_paths(sorted(files), root)
    if fails:
        raise ManifestError("; ".join(f.reason for f in fails))
    if out is not None:
        write_manifest(utts, out)
    return utts


def _decode_g722(src: Path, dst: Path) -> None:
    if dst.exists() and dst.stat().st_size > 44:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name("." + dst.name + ".tmp.wav")
    proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "g722",
                           "-i", str(src), "-ac", "1", "-ar", "16000", str(tmp)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise AudioError(f"{src}: ffmpeg could not decode G.722: {proc.stderr.strip()[-300:]}")
    os.replace(tmp, dst)


def split_of(uid: str, val_fraction: float) -> str:
    """Deterministic train/val assignment from a hash of the id."""
    h = int(hashlib.sha1(uid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def _write_splits(utts: list[Utterance], out_dir: Path, corpus: str, val_fraction: float,
                  min_duration: float) -> dict[str, Path]:
    """A recipe's end: utterances of at least ``min_duration`` s split by ``split_of`` into
    ``out_dir/<corpus>-train.jsonl`` and ``<corpus>-val.jsonl``."""
    splits: dict[str, list[Utterance]] = {"train": [], "val": []}
    for u in utts:
        if (u.duration or 0) >= min_duration:
            splits[split_of(u.id, val_fraction)].append(u)
    return {name: write_manifest(us, out_dir / f"{corpus}-{name}.jsonl") for name, us in splits.items()}


def prepare_asterisk(out_dir: str | Path, languages: Iterable[str] = ("en", "fr", "es"),
                     root: Path = ASTERISK_DIR, val_fraction: float = 0.05,
                     min_duration: float = 0.3, jobs: int = 4) -> dict[str, Path]:
    """Decode the asterisk G.722 prompts to 16 kHz wav and write train/val manifests.

    Needs ``ffmpeg`` and ``asterisk-core-sounds-{en,fr,es}-g722``. Writes
    ``out_dir/wav/<lang>/...wav``, ``asterisk-train.jsonl``, ``asterisk-val.jsonl``.
    """
    if shutil.which("ffmpeg") is None:
        raise ManifestError("ffmpeg not found: `apt-get install ffmpeg` (or `make setup`)")
    out_dir = Path(out_dir).resolve()   # manifests hold absolute paths
    jobs_list = []
    for lang in languages:
        if lang not in ASTERISK_VOICES:
            raise ManifestError(f"unknown asterisk language {lang!r}; known: {sorted(ASTERISK_VOICES)}")
        voice = root / ASTERISK_VOICES[lang]
        _need(voice, f"asterisk-core-sounds-{lang}-g722")
        for src in sorted(voice.rglob("*.g722")):
            rel = src.relative_to(voice)
            if rel.parts[0] == "silence":
                continue
            jobs_list.append((src, out_dir / "wav" / lang / rel.with_suffix(".wav")))
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda sd: _decode_g722(*sd), jobs_list))
    utts, fails = manifest_from_paths([d for _, d in jobs_list], out_dir / "wav")
    return _write_splits(utts, out_dir, "asterisk", val_fraction, min_duration)


def prepare_kde(out_dir: str | Path, val_fraction: float = 0.05, min_duration: float = 0.3
                ) -> dict[str, Path]:
    """Recorded words of klettres-data and ktuberling-data (ogg, many speakers and languages,
    mostly 44.1 kHz): train/val manifests pointing at the installed files (extract resamples).
    """
    files = []
    for name, (root, package) in KDE_DIRS.items():
        _need(root, package)
        files += [(f"{name}/{p.relative_to(root).with_suffix('').as_posix()}", p)
                  for p in sorted(root.rglob("*.ogg"))]
    utts: list[Utterance] = []
    fails: list[Failure] = []
    for uid, p in files:
        u, f = describe(p, uid)
        if u is not None:
            utts.append(u)
        elif f is not None:
            fails.append(f)
    return _write_splits(utts, Path(out_dir), "kde", val_fraction, min_duration)


def speed_perturb(manifest: str | Path, factors: Iterable[float], out_dir: str | Path,
                  sample_rate: int = 16000, jobs: int = 2) -> Path:
    """Kaldi-style speed perturbation: each utterance resampled by ``factor`` and kept at
    ``sample_rate`` (faster and higher for ``factor > 1``: new pitch and formants, a new
    pseudo-speaker). Writes ``out_dir/wav/sp<factor>/<id>.wav`` and ``out_dir/speed.jsonl`` with
    ids ``<id>_sp<factor>`` (the originals are not copied). Existing wavs are kept (resumable).
    """
    from pipeline.io.audio import load, write_wav

    factors = [float(f) for f in factors]
    if not factors or any(not 0.5 <= f <= 2.0 for f in factors):
        raise ManifestError(f"speed factors must lie in [0.5, 2], got {factors}")
    out_dir = Path(out_dir).resolve()
    utts = read_manifest(manifest)

    def one(job: tuple[Utterance, float]) -> Path:
        u, f = job
        dst = out_dir / "wav" / f"sp{f:g}" / f"{u.id}.wav"
        if not dst.exists():
            import librosa

            y = load(u.path, sample_rate)
            write_wav(dst, librosa.resample(y, orig_sr=sample_rate * f, target_sr=sample_rate,
                                            res_type="soxr_hq"), sample_rate)
        return dst

    jobs_list = [(u, f) for f in factors for u in utts]
    with ThreadPoolExecutor(jobs) as pool:
        dsts = list(pool.map(one, jobs_list))
    out = []
    for (u, f), d in zip(jobs_list, dsts):
        meta = info(d)
        out.append(Utterance(f"{u.id}_sp{f:g}", str(d), meta["sample_rate"], meta["channels"],
                             meta["num_samples"], meta["duration"]))
    return write_manifest(out, out_dir / "speed.jsonl")


# Festival diphone voices (more speakers for training). name -> (festival voice, Debian package).
# Real speakers' diphones, resynthesised; they read the asterisk prompts' texts (ASCII-folded:
# the Czech and Finnish voices read them with their own letter-to-sound rules). Not offered:
# festvox-ru (reads Cyrillic only; Russian is the held-out language of the evaluations) and the Indic
# *-nsk voices (Debian's packages lack their phone sets: "could not open file hindi_phones.scm").
FESTIVAL_VOICES = {"kal": ("kal_diphone", "festvox-kallpc16k"),
                   "ked": ("ked_diphone", "festvox-kdlpc16k"),
                   "cs-dita": ("czech_dita", "festvox-czech-dita"),
                   "cs-krb": ("czech_krb", "festvox-czech-krb"),
                   "cs-machac": ("czech_machac", "festvox-czech-machac"),
                   "cs-ph": ("czech_ph", "festvox-czech-ph"),
                   "fi-lj": ("suo_fi_lj_diphone", "festvox-suopuhe-lj"),
                   "fi-mv": ("hy_fi_mv_diphone", "festvox-suopuhe-mv")}
FESTIVAL_DIR = Path("/usr/share/festival/voices")
PROMPT_TEXTS = Path("/usr/share/doc")   # asterisk-core-sounds-LANG/core-sounds-LANG.txt.gz


def asterisk_prompts(languages: Iterable[str] = ("en", "fr", "es"), root: Path = PROMPT_TEXTS
                     ) -> dict[str, str]:
    """``{"<lang>/<prompt id>": text}`` from the asterisk-core-sounds-LANG packages' prompt
    lists, ASCII-folded, without tone descriptions (``[beep]``) and bracketed symbols; letters,
    digits and ``.,?!' -`` only (safe inside a Scheme string)."""
    import gzip
    import re
    import unicodedata

    prompts = {}
    for lang in languages:
        path = root / f"asterisk-core-sounds-{lang}" / f"core-sounds-{lang}.txt.gz"
        if not path.is_file():
            raise ManifestError(f"{path} not found: install the Debian package with "
                                f"`apt-get install asterisk-core-sounds-{lang}`")
        for line in gzip.open(path, "rt", encoding="utf-8"):
            pid, sep, text = line.partition(":")
            if line.startswith(";") or not sep or pid.startswith("silence/"):
                continue
            text = unicodedata.normalize("NFKD", re.sub(r"\[[^]]*\]", " ", text))
            text = re.sub(r"[^A-Za-z0-9.,?!' -]", " ", text.encode("ascii", "ignore").decode())
            text = " ".join(text.split())
            if re.search(r"[A-Za-z0-9]", text):
                prompts[f"{lang}/{pid.strip()}"] = text
    return prompts


def _festival_voice(voice: str, jobs_list: list[tuple[str, Path]]) -> str | None:
    """Synthesise ``(text, wav)`` pairs with one festival process; each wav is written under a
    temporary name and renamed, so an interrupted run leaves no truncated file. A prompt
    festival cannot say is skipped; if festival itself dies, what it finished is kept (the
    file it was writing is dropped) and its error is returned."""
    lines = [f"(voice_{voice})"]
    tmps = []
    for text, dst in jobs_list:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmps.append(dst.with_name("." + dst.name + ".tmp.wav"))
        tmps[-1].unlink(missing_ok=True)     # a crashed run's leftover
        lines.append(f'(unwind-protect (utt.save.wave (utt.synth (Utterance Text "{text}")) '
                     f'"{tmps[-1]}" \'riff) nil)')
    proc = subprocess.run(["festival", "--pipe"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True)
    done = [(tmp, dst) for tmp, (_, dst) in zip(tmps, jobs_list) if tmp.exists()]
    if proc.returncode != 0 and done:
        done.pop()[0].unlink()          # possibly cut short
    for tmp, dst in done:
        os.replace(tmp, dst)
    if proc.returncode != 0:
        return f"festival (voice {voice}) failed: {proc.stderr.strip()[-300:]}"
    return None


def prepare_festival(out_dir: str | Path, voices: Iterable[str] = tuple(FESTIVAL_VOICES),
                     per_voice: int = 300, val_fraction: float = 0.05, jobs: int = 2,
                     min_duration: float = 0.3, texts: Path = PROMPT_TEXTS, progress: bool = True
                     ) -> dict[str, Path]:
    """Synthesised speech of the festival diphone voices: each reads ``per_voice`` asterisk
    prompts (en/fr/es texts; a fixed, voice-dependent choice). Writes
    ``out_dir/wav/<voice>/<lang>/<prompt>.wav`` (kept when present: resumable),
    ``festival-train.jsonl``, ``festival-val.jsonl`` and, for prompts a voice could not say,
    ``festival-failures.csv``. Needs ``festival``, the voices' Debian packages and
    asterisk-core-sounds-{en,fr,es} (the texts; ``texts``: their folder)."""
    from pipeline.io.results import write_failures
    from pipeline.parallel.tasks import progress_bar

    if shutil.which("festival") is None:
        raise ManifestError("festival not found: `apt-get install festival` and the voices' "
                            "packages (festvox-...)")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = asterisk_prompts(root=texts)
    work: dict[str, list[tuple[str, Path]]] = {}
    ids: list[tuple[str, str, Path]] = []     # (id, festival voice, wav)
    for name in voices:
        if name not in FESTIVAL_VOICES:
            raise ManifestError(f"unknown festival voice {name!r}; known: {sorted(FESTIVAL_VOICES)}")
        voice, package = FESTIVAL_VOICES[name]
        if not any(FESTIVAL_DIR.glob(f"*/{voice}")):
            raise ManifestError(f"festival voice {voice} not found under {FESTIVAL_DIR}: "
                                f"`apt-get install {package}`")
        # the choice hashes another key than split_of's (the id), or the chosen would all be val
        chosen = sorted(prompts, key=lambda p: hashlib.sha1(f"pick {name} {p}".encode()).hexdigest())
        for pid in sorted(chosen[:per_voice]):
            dst = out_dir / "wav" / name / f"{pid}.wav"
            ids.append((f"{name}/{pid}", voice, dst))
            if not dst.exists():
                work.setdefault(voice, []).append((prompts[pid], dst))
    errors: dict[str, str | None] = {}
    with ThreadPoolExecutor(jobs) as pool, progress_bar(disable=not progress) as bar:
        task = bar.add_task("festival voices", total=len(work))
        futures = {pool.submit(_festival_voice, v, w): v for v, w in work.items()}
        for fut in as_completed(futures):
            errors[futures[fut]] = fut.result()
            bar.update(task, advance=1)
    utts: list[Utterance] = []
    fails: list[Failure] = []
    for uid, voice, dst in ids:
        if not dst.exists():
            why = errors.get(voice) or "festival could not say this prompt"
            fails.append(Failure(uid, str(dst), "prepare", why))
            continue
        u, f = describe(dst, uid)
        if u is not None:
            utts.append(u)
        elif f is not None:
            fails.append(f)
    write_failures(fails, out_dir / "festival-failures.csv")
    return _write_splits(utts, out_dir, "festival", val_fraction, min_duration)

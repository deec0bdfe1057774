"""festival's diphone voices (real speakers' diphones, resynthesised) reading the asterisk
prompts' texts: more speakers for training."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable

from pipeline.io.manifest import ManifestError, Utterance, describe
from pipeline.io.results import Failure
from pipeline.recipes._common import Prepared, finish
from pipeline.recipes.asterisk import PROMPT_TEXTS, asterisk_prompts

# name -> (festival voice, Debian package).
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
                     ) -> Prepared:
    """Synthesised speech of the festival diphone voices: each reads ``per_voice`` asterisk
    prompts (en/fr/es texts; a fixed, voice-dependent choice). Writes
    ``out_dir/wav/<voice>/<lang>/<prompt>.wav`` (kept when present: resumable),
    ``festival-train.jsonl``, ``festival-val.jsonl`` and, for prompts a voice could not say,
    ``festival-failures.csv``. Needs ``festival``, the voices' Debian packages and
    asterisk-core-sounds-{en,fr,es} (the texts; ``texts``: their folder)."""
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
    return finish(utts, fails, out_dir, "festival", val_fraction, min_duration)

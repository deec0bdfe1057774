"""The asterisk prompts (Debian's asterisk-core-sounds-LANG-g722: one studio voice per
language), decoded to 16 kHz wav; and the prompts' texts (festival's recipe reads them)."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from pipeline.io.audio import AudioError
from pipeline.io.manifest import ManifestError, manifest_from_paths
from pipeline.io.results import Failure
from pipeline.recipes._common import Prepared, decode_g722, finish, need

ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
ASTERISK_VOICES = {"en": "en_US_f_Allison", "fr": "fr_CA_f_June", "es": "es_MX_f_Allison",
                   "ru": "ru_RU_f_IvrvoiceRU", "it": "it_IT_m_Carlo"}
PROMPT_TEXTS = Path("/usr/share/doc")   # asterisk-core-sounds-LANG/core-sounds-LANG.txt.gz


def prepare_asterisk(out_dir: str | Path, languages: Iterable[str] = ("en", "fr", "es"),
                     root: Path = ASTERISK_DIR, val_fraction: float = 0.05,
                     min_duration: float = 0.3, jobs: int = 4) -> Prepared:
    """Decode the asterisk G.722 prompts to 16 kHz wav and write train/val manifests.

    Needs ``ffmpeg`` and ``asterisk-core-sounds-{en,fr,es}-g722``. Writes
    ``out_dir/wav/<lang>/...wav``, ``asterisk-train.jsonl``, ``asterisk-val.jsonl`` and, for
    prompts that cannot be decoded or read, ``asterisk-failures.csv``.
    """
    if shutil.which("ffmpeg") is None:
        raise ManifestError("ffmpeg not found: `apt-get install ffmpeg` (or `make setup`)")
    out_dir = Path(out_dir).resolve()   # manifests hold absolute paths
    jobs_list = []
    for lang in languages:
        if lang not in ASTERISK_VOICES:
            raise ManifestError(f"unknown asterisk language {lang!r}; known: {sorted(ASTERISK_VOICES)}")
        voice = root / ASTERISK_VOICES[lang]
        need(voice, f"asterisk-core-sounds-{lang}-g722")
        for src in sorted(voice.rglob("*.g722")):
            rel = src.relative_to(voice)
            if rel.parts[0] == "silence":
                continue
            jobs_list.append((src, out_dir / "wav" / lang / rel.with_suffix(".wav")))

    def decode(job: tuple[Path, Path]) -> Failure | None:
        src, dst = job
        try:
            decode_g722(src, dst)
        except AudioError as exc:
            uid = dst.relative_to(out_dir / "wav").with_suffix("").as_posix()
            return Failure(uid, str(src), "prepare", str(exc))
        return None

    with ThreadPoolExecutor(jobs) as pool:
        undecoded = [f for f in pool.map(decode, jobs_list) if f is not None]
    bad = {f.path for f in undecoded}
    utts, fails = manifest_from_paths([d for s, d in jobs_list if str(s) not in bad],
                                      out_dir / "wav")
    return finish(utts, undecoded + fails, out_dir, "asterisk", val_fraction, min_duration)


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

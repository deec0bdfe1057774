"""The test and demo corpus: Debian's pocketsphinx-testdata (10 wavs, 4 raw 16 kHz int16 files)."""
from __future__ import annotations

from pathlib import Path

from pipeline.io.manifest import (
    ManifestError,
    Utterance,
    manifest_from_paths,
    scan_folder,
    write_manifest,
)
from pipeline.recipes._common import need

POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")
POCKETSPHINX_RAW = ("goforward.raw", "numbers.raw", "something.raw", "tidigits/dhd.2934z.raw")


def prepare_pocketsphinx(out: str | Path | None = None, root: Path = POCKETSPHINX_DIR) -> list[Utterance]:
    """The corpus's utterances (all of them, or an error: a test corpus must be whole);
    written to the manifest ``out`` when given."""
    need(root, "pocketsphinx-testdata")
    files = scan_folder(root, (".wav",)) + [root / r for r in POCKETSPHINX_RAW if (root / r).exists()]
    utts, fails = manifest_from_paths(sorted(files), root)
    if fails:
        raise ManifestError("; ".join(f.reason for f in fails))
    if out is not None:
        write_manifest(utts, out)
    return utts

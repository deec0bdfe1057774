"""Our MCD / LSD beside the reference recipes' values on the same files (the demo's output).

    make demo
    .venv/bin/python benchmarks/metrics_reference.py --ref demo-out/pocketsphinx-mel80-16k.zarr \
        --hyp demo-out/wav-model-fgla100

Prints, per utterance and on average, ``mcd`` (ESPnet recipe), ``lsd`` (NU-Wave) and the
reference values, and the largest absolute difference.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.io.audio import load
from pipeline.metrics import registry as metrics
from pipeline.stages.score import references

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))   # the recipes
from _corpus import save_results
from reference_metrics import espnet_mcd, nuwave_lsd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="store or wav folder of references")
    ap.add_argument("--hyp", required=True, help="folder of reconstructions")
    a = ap.parse_args()
    refs, rate = references(a.ref)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for uid, path in sorted(refs.items()):
            hyp = Path(a.hyp) / f"{uid}.wav"
            if not hyp.exists():
                continue
            sr = rate or 16000
            y, x = load(path, sr), load(hyp, sr)
            n = min(len(y), len(x))
            y, x = y[:n], x[:n]
            # the recipe reads int16 wav files: write the reference (raw PCM ones too) as such
            ref_wav = Path(tmp) / "ref.wav"
            sf.write(ref_wav, y, sr, subtype="PCM_16")
            hyp_wav = Path(tmp) / "hyp.wav"
            sf.write(hyp_wav, x, sr, subtype="PCM_16")
            y, x = load(ref_wav, sr), load(hyp_wav, sr)
            rows.append({"id": uid,
                         "mcd": metrics.mel_cepstral_distortion(reference=y, estimate=x, sample_rate=sr),
                         "mcd_espnet": float(espnet_mcd(hyp_wav, ref_wav)),
                         "lsd": metrics.log_spectral_distance(reference=y, estimate=x, sample_rate=sr),
                         "lsd_nuwave": float(nuwave_lsd(y, x))})
            print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in rows[-1].items()}))
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("mcd", "mcd_espnet", "lsd", "lsd_nuwave")}
    print(f"{len(rows)} utterances; mean MCD ours {mean['mcd']:.4f} dB, ESPnet recipe "
          f"{mean['mcd_espnet']:.4f} dB; LSD ours {mean['lsd']:.4f}, NU-Wave {mean['lsd_nuwave']:.4f}; "
          f"max |diff| MCD {max(abs(r['mcd'] - r['mcd_espnet']) for r in rows):.2e}, "
          f"LSD {max(abs(r['lsd'] - r['lsd_nuwave']) for r in rows):.2e}")
    save_results("metrics-reference", {"mean": mean, "rows": rows})


if __name__ == "__main__":
    main()

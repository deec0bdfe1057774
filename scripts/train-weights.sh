#!/usr/bin/env bash
# Reproduce the shipped weights: corpora -> stores -> training -> weights/ (inversion models
# for each config; the DeGLI net for mel80-16k).
# Training data: asterisk en/fr/es G.722 prompts + klettres/ktuberling recorded words
# (never the pocketsphinx test corpus). On 2 CPU cores: mel80-16k ~65 min (96 epochs), the
# other configs 10-15 min each.
#   bash scripts/train-weights.sh [config ...]      (default: mel80-16k mel250-16k hifigan-22k)
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/pipeline
EPOCHS=${EPOCHS:-16}
STEPS=${STEPS:-150}
bash scripts/install-debian.sh asterisk-core-sounds-en-g722 asterisk-core-sounds-fr-g722 \
  asterisk-core-sounds-es-g722 klettres-data ktuberling-data
[ -f data/asterisk/asterisk-train.jsonl ] || $P prepare asterisk --out data/asterisk
[ -f data/kde/kde-train.jsonl ] || $P prepare kde --out data/kde
for split in train val; do
  cat data/asterisk/asterisk-$split.jsonl data/kde/kde-$split.jsonl > data/$split-all.jsonl
done
for cfg in "${@:-mel80-16k mel250-16k hifigan-22k}"; do
  for cfg1 in $cfg; do
    for split in train val; do
      $P extract data/$split-all.jsonl --out data/$split-$cfg1.zarr --config $cfg1 --with-mag -j 2 -q
    done
    # mel80-16k: 128 channels, 96 epochs, EMA + mel bound, and the lobe refinement at
    # inference (--refine lobes, recorded in the card); the shipped weights are this command's
    # output (2026-12-01). hifigan-22k: its card asks for the refinement too.
    # What this script gives vs what ships (each card's "made_by" says exactly how it was made):
    # mel250-16k and hifigan-22k: these commands with today's trainer (weight average, mel
    # bound); the shipped ones came from the trainer of commits c509219 and 0b8a04b (no
    # average, no bound): `git checkout COMMIT && bash scripts/train-weights.sh CFG`.
    extra=(--epochs $EPOCHS --patience 6)
    [ "$cfg1" = mel80-16k ] && extra=(--channels 128 --refine lobes --epochs 96 --patience 96)
    [ "$cfg1" = hifigan-22k ] && extra+=(--refine lobes)
    $P train invert --train data/train-$cfg1.zarr --val data/val-$cfg1.zarr \
      --out runs/invert-$cfg1 --steps $STEPS "${extra[@]}" -q
    cp runs/invert-$cfg1/invert-$cfg1.pt runs/invert-$cfg1/invert-$cfg1.json weights/
    if [ "$cfg1" = mel80-16k ]; then
      # DeGLI (phase only): 8 blocks chained with FGLA's momentum, trained unrolled from a zero
      # phase; ~20 min on 2 cores, early-stopped at epoch 16 (best 8) when the shipped net was made
      $P train degli --train data/train-$cfg1.zarr --val data/val-$cfg1.zarr \
        --out runs/degli-$cfg1 --epochs 24 --steps 80 --warmup 0 --train-warmup 0 0 \
        --train-init zeros --momentum 0.99 --unroll 8 --lr 3e-4 -q
      cp runs/degli-$cfg1/degli-$cfg1.pt runs/degli-$cfg1/degli-$cfg1.json weights/
    fi
  done
done

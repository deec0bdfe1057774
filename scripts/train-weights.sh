#!/usr/bin/env bash
# Reproduce the shipped inversion weights: corpora -> stores -> training -> weights/.
# Training data: asterisk en/fr/es G.722 prompts + klettres/ktuberling recorded words
# (never the pocketsphinx test corpus). About 15 min per config on 2 CPU cores.
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
    $P train invert --train data/train-$cfg1.zarr --val data/val-$cfg1.zarr \
      --out runs/invert-$cfg1 --epochs $EPOCHS --steps $STEPS -q
    cp runs/invert-$cfg1/invert-$cfg1.pt runs/invert-$cfg1/invert-$cfg1.json weights/
  done
done

#!/usr/bin/env bash
# Reproduce the shipped inversion weights: corpora -> stores -> training -> weights/.
# Training data: asterisk en/fr/es G.722 prompts + klettres/ktuberling recorded words
# (never the pocketsphinx test corpus). About 10-15 min per config on 2 CPU cores.
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
    # mel80-16k ships the wider model (192 channels, 96 epochs (43 min), EMA + mel bound: this
    # trainer). mel250-16k and hifigan-22k ship 128-channel models trained for 16 epochs by
    # the trainer of commit c509219 (no EMA, no bound; their cards say so by omission).
    extra=(--epochs $EPOCHS --patience 6)
    [ "$cfg1" = mel80-16k ] && extra=(--channels 192 --epochs 96 --patience 96)
    $P train invert --train data/train-$cfg1.zarr --val data/val-$cfg1.zarr \
      --out runs/invert-$cfg1 --steps $STEPS "${extra[@]}" -q
    cp runs/invert-$cfg1/invert-$cfg1.pt runs/invert-$cfg1/invert-$cfg1.json weights/
  done
done

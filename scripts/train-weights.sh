#!/usr/bin/env bash
# Reproduce the shipped weights: corpora -> stores -> training -> weights/ (inversion models
# for each config; the DeGLI net for mel80-16k).
# Training data: asterisk en/fr/es G.722 prompts + klettres/ktuberling recorded words
# (never the pocketsphinx test corpus); hifigan-22k's fine-tune adds festival's diphone voices
# (pipeline prepare festival). On one thread of a 2-core VM: mel80-16k ~2.6 h (96 epochs
# + a 10-epoch fine-tune + a 30-epoch low-band stage + a 10-epoch joint fine-tune), hifigan-22k ~2 h (96 + 10 epochs), mel250-16k ~20 min (THREADS=1,
# the default: what ships was trained so; seeded, the same bits on the same machine type).
# THREADS=0 uses every core: the same recipe, faster, other float rounding (the thread count
# changes the order of sums).
#   bash scripts/train-weights.sh [config ...]      (default: mel80-16k mel250-16k hifigan-22k)
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/pipeline
EPOCHS=${EPOCHS:-16}
STEPS=${STEPS:-150}
OVER=${OVER:-6}
FT_EPOCHS=${FT_EPOCHS:-10}
THREADS=${THREADS:-1}
bash scripts/install-debian.sh asterisk-core-sounds-en-g722 asterisk-core-sounds-fr-g722 \
  asterisk-core-sounds-es-g722 klettres-data ktuberling-data \
  asterisk-core-sounds-en asterisk-core-sounds-fr asterisk-core-sounds-es festival \
  festvox-kallpc16k festvox-kdlpc16k festvox-czech-dita festvox-czech-krb festvox-czech-machac \
  festvox-czech-ph festvox-suopuhe-lj festvox-suopuhe-mv
[ -f data/asterisk/asterisk-train.jsonl ] || $P prepare asterisk --out data/asterisk
[ -f data/kde/kde-train.jsonl ] || $P prepare kde --out data/kde
# festival's diphone voices reading asterisk prompts (issue 18: more speakers; hifigan-22k's
# stage 2). One prompt (fi-lj, es/priv-callee-options) cannot be said: prepare exits 1 beside
# its manifests and festival-failures.csv; the manifests are what counts.
[ -f data/festival/festival-train.jsonl ] || $P prepare festival --out data/festival \
  || [ -f data/festival/festival-train.jsonl ]
for split in train val; do
  cat data/asterisk/asterisk-$split.jsonl data/kde/kde-$split.jsonl > data/$split-all.jsonl
done
cat data/train-all.jsonl data/festival/festival-train.jsonl > data/train-fest.jsonl
for cfg in "${@:-mel80-16k mel250-16k hifigan-22k}"; do
  for cfg1 in $cfg; do
    for split in train val; do
      $P extract data/$split-all.jsonl --out data/$split-$cfg1.zarr --config $cfg1 --with-mag -j 2 -q
    done
    # Stage 1, from scratch. mel80-16k: 128 channels, 96 epochs, EMA + mel bound, and the
    # lobe refinement at inference (--refine lobes, recorded in the card). hifigan-22k: the
    # refinement too. mel250-16k: the defaults (with --ema 0, below).
    # What ships is what this script gives: all three nets were retrained with ccff94c's
    # trainer, one thread (each card's "made_by"). Where the net exceeds the mel bound, only
    # the gradient that lowers the output passes (a hard cap left a net that overshot early
    # stuck; straight through both ways ran away where rounding puts the truth a hair above
    # the bound).
    extra=(--epochs $EPOCHS --patience 6)
    [ "$cfg1" = mel80-16k ] && extra=(--channels 128 --refine lobes --epochs 96 --patience 96)
    # hifigan-22k: 96 epochs (16 stopped while validation still fell: SC 0.181 -> 0.146; 48
    # still improved at its last epoch, SC 0.150; 96: 0.142, best epoch 93), the
    # raw weights validated and exported (--ema 0: over a short run the weight average lags a
    # net this far from its start; at epoch 7 of 16, validation SC 0.95 averaged, 0.17 raw).
    # mel250-16k: --ema 0 too (as its weights before; not compared with a weight average).
    [ "$cfg1" = hifigan-22k ] && extra=(--epochs 96 --patience 96 --refine lobes --ema 0)
    [ "$cfg1" = mel250-16k ] && extra+=(--ema 0)
    $P train invert --train data/train-$cfg1.zarr --val data/val-$cfg1.zarr \
      --out runs/invert-$cfg1 --steps $STEPS --threads $THREADS "${extra[@]}" -q
    out=runs/invert-$cfg1
    if [ "$cfg1" != mel250-16k ]; then
      # Stage 2 (mel80-16k, hifigan-22k): a fine-tune of stage 1 with the asymmetric loss
      # (log errors above the truth x OVER: deeper gaps between the harmonics, issue 18).
      # hifigan-22k's stage 2 adds the festival voices (chosen on validation + held-out
      # Russian: 3.862 / 3.903 / 3.844 vs 3.878 / 3.883 / 3.839 without; BENCHMARKS, ninth
      # session); mel80-16k's did not gain from them and stays on train-all.
      out=runs/finetune/invert-$cfg1
      ft_train=data/train-$cfg1.zarr
      if [ "$cfg1" = hifigan-22k ]; then
        ft_train=data/train-fest-$cfg1.zarr
        $P extract data/train-fest.jsonl --out $ft_train --config $cfg1 --with-mag -j 2 -q
      fi
      $P train invert --train $ft_train --val data/val-$cfg1.zarr --out $out \
        --init runs/invert-$cfg1/invert-$cfg1.pt --over-weight $OVER --lr 5e-4 \
        --epochs $FT_EPOCHS --patience $FT_EPOCHS --steps $STEPS --refine lobes --threads $THREADS -q
    fi
    if [ "$cfg1" = mel80-16k ]; then
      # Stage 3 (mel80-16k): a low-band 2-D net (16 channels, convs over time x frequency
      # below 1.25 kHz, hidden layers over frequency only) added to stage 2's net and trained
      # alone, the rest frozen; it replaces the lobe refinement (--refine left empty). Chosen
      # on validation + held-out Russian (eleventh session, BENCHMARKS.md): 3.596 -> 3.656,
      # 3.319 / 3.297 -> 3.333 / 3.329. ~15 min on one thread.
      $P train invert --train data/train-$cfg1.zarr --val data/val-$cfg1.zarr \
        --out runs/lowband/invert-$cfg1 --init $out/invert-$cfg1.pt --lowband 16 \
        --lowband-time-kernel 1 --lr 1e-3 --batch-size 16 --over-weight $OVER --epochs 30 \
        --patience 30 --steps $STEPS --threads $THREADS -q
      # Stage 4: everything fine-tuned together from stage 3 (the 1-D net learns to feed the
      # 2-D net): validation 3.657 -> 3.675, Russian 3.322 / 3.329 -> 3.346 / 3.341 (zero / 6
      # random starts), chosen on those; ~20 min on one thread.
      $P train invert --train data/train-$cfg1.zarr --val data/val-$cfg1.zarr \
        --out runs/joint/invert-$cfg1 --init runs/lowband/invert-$cfg1/invert-$cfg1.pt \
        --lr 2e-4 --batch-size 32 --over-weight $OVER --epochs 10 --patience 10 --steps $STEPS \
        --threads $THREADS -q
      out=runs/joint/invert-$cfg1
    fi
    cp $out/invert-$cfg1.pt $out/invert-$cfg1.json weights/
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

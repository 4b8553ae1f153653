#!/usr/bin/env bash
# Head-level dual measurement for gemma3-270m (CPU, one thread): the text copy score of every head of all 18
# layers (the full model runs either way; compare joins on the heads of the ablated slice 4:6), head-by-head
# ablation of the trained pretrained recall runs (seeds 0 and 1), and their comparison; then the recall table
# and curves. Run after reduced_recall.sh. About 5 minutes.
set -euo pipefail
export OMP_NUM_THREADS=1
frozen-dt heads copy-probe --backbone gemma3-270m --layers 0:18 --out results/probes/copy_probe_gemma3-270m.csv
for seed in 0 1; do
  frozen-dt heads ablate runs/probes/recall/pretrained/seed$seed --out results/probes/ablation_recall_pretrained_seed$seed.csv
  frozen-dt heads compare --copy results/probes/copy_probe_gemma3-270m.csv \
    --ablation results/probes/ablation_recall_pretrained_seed$seed.csv --out results/probes/heads_compare_seed$seed
done
python -m frozen_dt.probes.report --results results/probes --task recall

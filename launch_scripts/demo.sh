#!/usr/bin/env bash
# The bundled demo (`make demo`): on CPU, in a few minutes, on corpus/kjv.txt:
#   1. train a WordPiece tokenizer        4. pretrain with fast-electra (frozen generator from 3)
#   2. prepare packed indexed datasets    5. pretrain with electra (joint, the original method)
#   3. train a tiny generator (mode=mlm)  6. print both side by side
# Everything goes under $DEMO_DIR (default .demo/); the three runs are started afresh each time.
# Extra arguments are config overrides for steps 3-5, e.g. `bash launch_scripts/demo.sh train.steps=50`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-.demo}
FE=("$PY" -m fast_electra_ds)
export DS_ACCELERATOR=cpu

if [ ! -d "$DEMO_DIR/tokenizer" ]; then
  "${FE[@]}" train-tokenizer --input corpus/kjv.txt --vocab-size 4096 --output "$DEMO_DIR/tokenizer"
fi
if [ ! -d "$DEMO_DIR/data" ]; then
  "${FE[@]}" prepare-data --input corpus/kjv.txt --tokenizer "$DEMO_DIR/tokenizer" --seq-len 64 \
    --valid-fraction 0.02 --config tiny --output "$DEMO_DIR/data"
fi
rm -rf "$DEMO_DIR/mlm" "$DEMO_DIR/fast-electra" "$DEMO_DIR/electra"
common=(data.paths="$DEMO_DIR/data" device=cpu checkpoint.resume=none)

echo "== 3/6 generator (mode=mlm)"
"${FE[@]}" pretrain --config tiny mode=mlm run_dir="$DEMO_DIR/mlm" "${common[@]}" "$@"
echo "== 4/6 fast-electra"
"${FE[@]}" pretrain --config tiny mode=fast-electra run_dir="$DEMO_DIR/fast-electra" \
  generator.path="$DEMO_DIR/mlm/generator" "${common[@]}" "$@"
echo "== 5/6 electra (joint baseline)"
"${FE[@]}" pretrain --config tiny mode=electra run_dir="$DEMO_DIR/electra" "${common[@]}" "$@"
echo "== 6/6 results ($(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
"${FE[@]}" compare "$DEMO_DIR/fast-electra" "$DEMO_DIR/electra"

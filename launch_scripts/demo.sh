#!/usr/bin/env bash
# The bundled demo (`make demo`): on CPU, in a few minutes, on corpus/kjv.txt:
#   1. train a WordPiece tokenizer        4. pretrain with fast-electra (frozen generator from 3)
#   2. prepare packed indexed datasets    5. pretrain with electra (joint, the original method)
#   3. train a tiny generator (mode=mlm)  6. compare both on one judge, with learning curves
# The judge of the held-out evaluation is the generator of step 3 (fast-electra's frozen one) for
# both runs, so their numbers are measured on the same replaced tokens. Settings: the `demo`
# recipe (fast_electra_ds/recipes/demo.yaml), the same for both methods.
# Everything goes under $DEMO_DIR (default .demo/); the three runs are started afresh each time.
# Extra arguments are config overrides for steps 4-5, e.g. `bash launch_scripts/demo.sh train.steps=500`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-.demo}
FE=("$PY" -m fast_electra_ds)
export DS_ACCELERATOR=cpu
start=$SECONDS

if [ ! -d "$DEMO_DIR/tokenizer" ]; then
  "${FE[@]}" train-tokenizer --input corpus/kjv.txt --vocab-size 4096 --output "$DEMO_DIR/tokenizer"
fi
if [ ! -d "$DEMO_DIR/data64" ]; then
  "${FE[@]}" prepare-data --input corpus/kjv.txt --tokenizer "$DEMO_DIR/tokenizer" --seq-len 64 \
    --valid-fraction 0.05 --config demo --output "$DEMO_DIR/data64"
fi
rm -rf "$DEMO_DIR/mlm" "$DEMO_DIR/fast-electra" "$DEMO_DIR/electra"
generator="$DEMO_DIR/mlm/generator"
common=(data.paths="$DEMO_DIR/data64" device=cpu checkpoint.resume=none)

echo "== 3/6 generator (mode=mlm), also the judge of both runs"
"${FE[@]}" pretrain --config demo mode=mlm run_dir="$DEMO_DIR/mlm" train.steps=500 eval.every=500 \
  "${common[@]}"
echo "== 4/6 fast-electra"
"${FE[@]}" pretrain --config demo mode=fast-electra run_dir="$DEMO_DIR/fast-electra" \
  generator.path="$generator" "${common[@]}" "$@"
echo "== 5/6 electra (joint baseline), judged by the same generator"
"${FE[@]}" pretrain --config demo mode=electra run_dir="$DEMO_DIR/electra" \
  eval.judge="$generator" "${common[@]}" "$@"
echo "== 6/6 results ($(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
"${FE[@]}" compare "$DEMO_DIR/fast-electra" "$DEMO_DIR/electra" --plot "$DEMO_DIR/curves.png"
echo "demo took $((SECONDS - start)) s"

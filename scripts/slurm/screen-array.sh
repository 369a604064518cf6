#!/usr/bin/env bash
# screen-array.sh — screen a manifest as a Slurm job array, one shard per
# task, then merge the shards' audit stores in a dependent job.
#
#   scripts/slurm/screen-array.sh [options] MANIFEST OUTDIR      submit (prints the job ids)
#
# Options:
#   --shards N        array tasks = shards (default 4): --array=0-(N-1)
#   --limit L         at most L tasks running at once (--array=...%L; default: no limit)
#   --cpus C          CPUs per task (default 2); the task screens with --jobs C
#   --cxrvqa EXE      the cxrvqa binary (default: `cxrvqa` in PATH, else build/cxrvqa of this tree)
#   --model FILE      model (default: cxrvqa's own)
#   --question Q      a question (repeatable; default: screen's four)
#   --local-dir DIR   node-local folder for each task's live audit store (default: $TMPDIR or /tmp)
#   --max-restarts R  requeue a task whose screen was killed or failed at most R times (default 3)
#   --sbatch ARG      one more argument for both sbatch calls (repeatable: --sbatch --partition=cpu)
#
# OUTDIR (shared between the nodes) receives manifest, logs/, sr/ (the
# structured reports), shards/shard-K.{sqlite,csv,jsonl} (each shard's
# audit store, copied there once the shard finished and verified), then
# merged.{sqlite,csv,jsonl} from the merge job.
#
# A task screens on local disk ($LOCAL/cxrvqa-<array job>-shard-K/audit.sqlite):
# the audit store refuses network filesystems. A task whose screen is killed
# (SIGKILL, node trouble) or fails requeues itself (scontrol requeue) up to
# --max-restarts times; on the same node the rerun skips what its own audit
# already holds; on another node the shard starts again from nothing (the
# partial store of the first node is never merged). Exit 1 of screen (some
# images gave errors, recorded in the audit) is a finished shard, not requeued.
#
# Internal modes, run by Slurm: `screen-array.sh task OUTDIR`, `screen-array.sh merge OUTDIR`.
set -uo pipefail

die() { echo "screen-array: $*" >&2; exit 2; }

load_env() {
  OUT=$1
  [ -r "$OUT/array.env" ] || die "$OUT/array.env: missing (submit with screen-array.sh MANIFEST OUTDIR)"
  # shellcheck disable=SC1091
  . "$OUT/array.env"
  QUESTION_ARGS=()
  if [ -s "$OUT/questions.txt" ]; then
    while IFS= read -r q; do QUESTION_ARGS+=(--question "$q"); done < "$OUT/questions.txt"
  fi
  MODEL_ARGS=()
  [ -n "$MODEL" ] && MODEL_ARGS=(--model "$MODEL")
}

# copy a finished store beside its final name, check it, then rename (atomic on one filesystem)
publish_db() {
  local src=$1 dst=$2
  if command -v sqlite3 >/dev/null; then
    sqlite3 "$src" ".backup '$dst.tmp'" || return 1
  else
    cp "$src" "$dst.tmp" || return 1
  fi
  "$CXRVQA" audit verify --db "$dst.tmp" >/dev/null || { rm -f "$dst.tmp"; return 1; }
  mv -f "$dst.tmp" "$dst"
}

run_task() {
  load_env "$1"
  : "${SLURM_ARRAY_TASK_ID:?not a Slurm array task}" "${SLURM_ARRAY_JOB_ID:?not a Slurm array task}"
  local k=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
  local jobs=${SLURM_CPUS_PER_TASK:-1}
  local live="$LOCAL_DIR/cxrvqa-$SLURM_ARRAY_JOB_ID-shard-$k"
  mkdir -p -m 700 "$live" || exit 3
  echo "screen-array: shard $k of ${SLURM_ARRAY_TASK_COUNT:-?} on $(hostname), attempt $((${SLURM_RESTART_COUNT:-0} + 1)), --jobs $jobs, store $live/audit.sqlite"
  local t0=$SECONDS
  "$CXRVQA" screen "${MODEL_ARGS[@]}" "${QUESTION_ARGS[@]}" --manifest "$OUT/manifest" --shard-from-env \
      --jobs "$jobs" --db "$live/audit.sqlite" --sr-out "$OUT/sr" \
      --csv "$live/shard.csv" --jsonl "$live/shard.jsonl" &
  local pid=$!
  echo "$pid" > "$live/screen.pid"
  wait "$pid"
  local rc=$?
  rm -f "$live/screen.pid"
  echo "screen-array: shard $k: screen exited $rc after $((SECONDS - t0)) s"
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
    if [ "${SLURM_RESTART_COUNT:-0}" -lt "$MAX_RESTARTS" ]; then
      echo "screen-array: shard $k: requeueing (restart $((${SLURM_RESTART_COUNT:-0} + 1)) of at most $MAX_RESTARTS)"
      scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
      sleep 600 # the requeue ends this run
    fi
    exit "$rc"
  fi
  mkdir -p "$OUT/shards"
  publish_db "$live/audit.sqlite" "$OUT/shards/shard-$k.sqlite" || { echo "screen-array: shard $k: cannot publish its audit store" >&2; exit 3; }
  cp "$live/shard.csv" "$OUT/shards/shard-$k.csv" && cp "$live/shard.jsonl" "$OUT/shards/shard-$k.jsonl" || exit 3
  echo "screen-array: shard $k: done, $OUT/shards/shard-$k.sqlite"
}

run_merge() {
  load_env "$1"
  local missing=0 shards=()
  for ((k = 0; k < SHARDS; k++)); do
    if [ -e "$OUT/shards/shard-$k.sqlite" ]; then shards+=("$OUT/shards/shard-$k.sqlite")
    else echo "screen-array: merge: shard $k has no finished store ($OUT/shards/shard-$k.sqlite)" >&2; missing=1; fi
  done
  [ "$missing" -eq 0 ] || exit 3
  local live="$LOCAL_DIR/cxrvqa-${SLURM_JOB_ID:-$$}-merge"
  mkdir -p -m 700 "$live" || exit 3
  "$CXRVQA" audit merge --out "$live/merged.sqlite" "${shards[@]}" || exit $?
  "$CXRVQA" audit verify --db "$live/merged.sqlite" || exit $?
  "$CXRVQA" screen --collect "$live/merged.sqlite" "${QUESTION_ARGS[@]}" --csv "$live/merged.csv" --jsonl "$live/merged.jsonl" || exit $?
  publish_db "$live/merged.sqlite" "$OUT/merged.sqlite" || exit 3
  cp "$live/merged.csv" "$OUT/merged.csv" && cp "$live/merged.jsonl" "$OUT/merged.jsonl" || exit 3
  rm -rf "$live"
  echo "screen-array: merged $SHARDS shards into $OUT/merged.sqlite, $OUT/merged.csv"
}

case "${1:-}" in
  task) run_task "${2:?OUTDIR}"; exit ;;
  merge) run_merge "${2:?OUTDIR}"; exit ;;
esac

# ---- submit
SHARDS=4 LIMIT="" CPUS=2 CXRVQA="" MODEL="" LOCAL_DIR="${TMPDIR:-/tmp}" MAX_RESTARTS=3
QUESTIONS=() SBATCH=() POS=()
while (($#)); do
  case "$1" in
    --shards) SHARDS=${2:?}; shift 2 ;;
    --limit) LIMIT=${2:?}; shift 2 ;;
    --cpus) CPUS=${2:?}; shift 2 ;;
    --cxrvqa) CXRVQA=${2:?}; shift 2 ;;
    --model) MODEL=${2:?}; shift 2 ;;
    --question) QUESTIONS+=("${2:?}"); shift 2 ;;
    --local-dir) LOCAL_DIR=${2:?}; shift 2 ;;
    --max-restarts) MAX_RESTARTS=${2:?}; shift 2 ;;
    --sbatch) SBATCH+=("${2:?}"); shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) POS+=("$1"); shift ;;
  esac
done
[ ${#POS[@]} -eq 2 ] || die "usage: screen-array.sh [options] MANIFEST OUTDIR (see --help)"
MANIFEST=${POS[0]} OUT=${POS[1]}
[[ "$SHARDS" =~ ^[1-9][0-9]*$ ]] || die "--shards: a whole number >= 1, not '$SHARDS'"
[[ "$CPUS" =~ ^[1-9][0-9]*$ ]] || die "--cpus: a whole number >= 1, not '$CPUS'"
[ -z "$LIMIT" ] || [[ "$LIMIT" =~ ^[1-9][0-9]*$ ]] || die "--limit: a whole number >= 1, not '$LIMIT'"
[[ "$MAX_RESTARTS" =~ ^[0-9]+$ ]] || die "--max-restarts: a whole number, not '$MAX_RESTARTS'"
[ -r "$MANIFEST" ] || die "$MANIFEST: cannot read the manifest (make one with: cxrvqa screen --list DIR... > manifest)"
if [ -z "$CXRVQA" ]; then
  CXRVQA=$(command -v cxrvqa || true)
  [ -n "$CXRVQA" ] || CXRVQA="$(cd "$(dirname "$0")/../.." && pwd)/build/cxrvqa"
fi
[ -x "$CXRVQA" ] || die "$CXRVQA: not an executable cxrvqa (give --cxrvqa)"
command -v sbatch >/dev/null || die "sbatch not found: is this a Slurm submit host?"
mkdir -p "$OUT/logs" "$OUT/sr" "$OUT/shards" || die "$OUT: cannot create"
OUT=$(cd "$OUT" && pwd)
CXRVQA=$(cd "$(dirname "$CXRVQA")" && pwd)/$(basename "$CXRVQA")
[ -z "$MODEL" ] || MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
# the tasks read absolute paths (they may start elsewhere; a shard is a hash of the absolute path)
bad=$(awk 'NF && !/^#/ && !/^\// {print NR": "$0; exit}' "$MANIFEST")
[ -z "$bad" ] || die "$MANIFEST:$bad: not an absolute path (make the manifest with: cxrvqa screen --list DIR... > manifest)"
cp "$MANIFEST" "$OUT/manifest" || die "cannot copy the manifest"
: > "$OUT/questions.txt"
for q in "${QUESTIONS[@]}"; do printf '%s\n' "$q" >> "$OUT/questions.txt"; done
{
  printf 'CXRVQA=%q\nMODEL=%q\nLOCAL_DIR=%q\nMAX_RESTARTS=%q\nSHARDS=%q\n' "$CXRVQA" "$MODEL" "$LOCAL_DIR" "$MAX_RESTARTS" "$SHARDS"
} > "$OUT/array.env"
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
ARRAY="0-$((SHARDS - 1))${LIMIT:+%$LIMIT}"
array_id=$(sbatch --parsable --job-name=cxrvqa-screen --array="$ARRAY" --cpus-per-task="$CPUS" --ntasks=1 \
  --requeue --open-mode=append --output="$OUT/logs/shard-%a.out" "${SBATCH[@]}" "$SELF" task "$OUT") ||
  die "sbatch of the array failed"
array_id=${array_id%%;*}
merge_id=$(sbatch --parsable --job-name=cxrvqa-merge --dependency=afterok:"$array_id" --kill-on-invalid-dep=yes \
  --cpus-per-task=1 --ntasks=1 --output="$OUT/logs/merge.out" "${SBATCH[@]}" "$SELF" merge "$OUT") ||
  die "sbatch of the merge failed (array $array_id is queued: scancel $array_id)"
merge_id=${merge_id%%;*}
echo "array $array_id ($ARRAY, $CPUS CPUs a task), merge $merge_id (after every task succeeded); outputs in $OUT"

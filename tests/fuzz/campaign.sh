#!/usr/bin/env bash
# campaign.sh HOURS [TARGET...] — a longer fuzzing campaign than CI's, that
# keeps what it learns.
#
# HOURS (a decimal, e.g. 0.1) of wall time are shared equally by the targets
# (default: all six), one after the other, each with CXR_CAMPAIGN_JOBS
# libFuzzer processes (-fork=N, default 1; crashes, timeouts and
# out-of-memory do not stop it) and the limits of ci_fuzz.sh
# (-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048).
#
# Corpus: BUILD/fuzz-work/campaign/<target>/corpus, kept from one campaign
# to the next (seeded, the first time and every time, with the committed
# inputs ci_fuzz.sh replays, plus the malformed suite for fuzz_ingest).
# Findings: every artifact is minimised (-minimize_crash=1; a timeout is
# kept as found) and saved as tests/fuzz/regressions/<target>/<kind>-<sha1
# prefix> unless an identical input is already there; the raw artifacts stay
# in BUILD/fuzz-work/campaign/<target>/artifacts. New files under
# tests/fuzz/regressions/ are for a human to commit with the fix: until the
# bug is fixed, ci_fuzz.sh's replay step fails on them, as it should.
#
# CXR_CAMPAIGN_CPU_HOURS=H stops each target once its fuzzing processes
# have used H CPU-hours (polled every 20 s); HOURS stays the upper bound of
# wall time per run. For a machine shared with other work, where wall time
# says little about how much fuzzing was done.
#
# Totals, per target and overall: CPU-hours (user + system of the fuzzing
# processes), executions, coverage (libFuzzer's cov: edges), corpus size,
# findings. Copy them into SECURITY.md's campaign table.
#
# Build: as ci_fuzz.sh (BUILD = CXR_FUZZ_BUILD, default build-fuzz).
# Exit status: 0 when the campaign ran (findings or not), 1 when it could not
# build or run a target, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]*\.?[0-9]+$ ]]; then
  echo "usage: $0 HOURS [TARGET...]" >&2
  exit 2
fi
HOURS=$1
shift
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_ingest fuzz_gguf fuzz_frame fuzz_question fuzz_plugin_request fuzz_jls)
BUILD=${CXR_FUZZ_BUILD:-build-fuzz}
JOBS=${CXR_CAMPAIGN_JOBS:-1}
WORK=$BUILD/fuzz-work/campaign
mkdir -p "$WORK"
CPU_BUDGET=
if [ -n "${CXR_CAMPAIGN_CPU_HOURS:-}" ]; then
  if ! [[ "$CXR_CAMPAIGN_CPU_HOURS" =~ ^[0-9]*\.?[0-9]+$ ]]; then
    echo "campaign: CXR_CAMPAIGN_CPU_HOURS must be a number of hours" >&2
    exit 2
  fi
  CPU_BUDGET=$(awk -v h="$CXR_CAMPAIGN_CPU_HOURS" 'BEGIN { print int(h * 3600) }')
fi
# PID and all its descendants
tree_pids() {
  local c
  echo "$1"
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$c"; done
}
# CPU-seconds (user + system) used so far by process PID, its reaped children
# and its live descendants
tree_cpu() {
  local p
  for p in $(tree_pids "$1"); do
    awk -v self="$([ "$p" = "$1" ] && echo 1 || echo 0)" '{ sub(/^.*\) /, ""); t = $12 + $13; if (self) t += $14 + $15; print t }' "/proc/$p/stat" 2>/dev/null
  done | awk -v hz="$(getconf CLK_TCK)" '{ s += $1 } END { print int(s / hz) }'
}
SECS=$(awk -v h="$HOURS" -v n=${#TARGETS[@]} 'BEGIN { s = int(h * 3600 / n); print (s < 1 ? 1 : s) }')

# build through ci_fuzz.sh's path, replay only (fails fast on a regression)
CXR_FUZZ_EXPLORE=0 tests/fuzz/ci_fuzz.sh "${TARGETS[@]}" >"$WORK/replay.log" 2>&1
rrc=$?
if [ "$rrc" -ne 0 ] && ! grep -q 'REPLAY FAILED' "$WORK/replay.log"; then
  cat "$WORK/replay.log"
  echo "campaign: the fuzz build failed" >&2
  exit 1
fi
[ "$rrc" -ne 0 ] && echo "campaign: note: the replay of committed inputs fails (see $WORK/replay.log); fuzzing anyway"
QSEEDS=$BUILD/fuzz-work/ci/question-seeds
MSEEDS=$WORK/malformed-seeds
if [[ " ${TARGETS[*]} " == *" fuzz_ingest "* ]] && [ ! -d "$MSEEDS" ]; then
  /usr/bin/python3 tests/malformed/generate.py "$MSEEDS" >/dev/null 2>"$WORK/malformed-seeds.log" || true
  rm -f "$MSEEDS/manifest.json"
fi
seeds_for() {
  case $1 in
    fuzz_ingest) echo tests/fuzz/corpus sample_data "$MSEEDS" ;;
    fuzz_gguf) echo tests/fuzz/corpus_gguf ;;
    fuzz_frame) echo tests/fuzz/corpus_frame ;;
    fuzz_question) echo "$QSEEDS" ;;
    fuzz_plugin_request) echo tests/fuzz/corpus_plugin ;;
    fuzz_jls) echo tests/fuzz/corpus_jls ;;
  esac
  echo "tests/fuzz/regressions/$1"
}
max_len_for() {
  case $1 in
    fuzz_ingest) echo 4194304 ;; fuzz_gguf) echo 262144 ;; fuzz_frame) echo 65536 ;;
    fuzz_question) echo 4160 ;; fuzz_plugin_request) echo 70000 ;; fuzz_jls) echo 65536 ;;
  esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
echo "campaign: $HOURS h over ${#TARGETS[@]} target(s): $SECS s each, $JOBS process(es); work in $WORK"
status=0
tot_cpu=0 tot_exec=0 tot_find=0
rows=()
for t in "${TARGETS[@]}"; do
  bin=$BUILD/tests/fuzz/$t
  [ -x "$bin" ] || bin=$BUILD/$t
  if [ ! -x "$bin" ]; then
    echo "campaign: $t was not built" >&2
    status=1
    continue
  fi
  dir=$WORK/$t
  mkdir -p "$dir/corpus" "$dir/artifacts" "tests/fuzz/regressions/$t"
  before=$(find "$dir/artifacts" -type f ! -name '*.min' | sort)
  seeds=()
  for s in $(seeds_for "$t"); do [ -d "$s" ] && seeds+=("$s"); done
  args=(-max_total_time="$SECS" -max_len="$(max_len_for "$t")" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10
        -print_final_stats=1 -artifact_prefix="$dir/artifacts/")
  [ "$JOBS" -gt 1 ] && args+=(-fork="$JOBS" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  log=$dir/campaign-$(date +%Y%m%d-%H%M%S).log
  echo "campaign: $t for $SECS s ($log)"
  # CPU of the fuzzing processes: the children's rusage, before and after
  c0=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
  if [ -n "$CPU_BUDGET" ]; then
    # stop at CPU_BUDGET CPU-seconds of the fuzzing processes (the wall time
    # above is then only an upper bound): their CPU is polled every 20 s
    # its own process group (setsid), so that stopping it stops its jobs too
    setsid "$bin" "${args[@]}" "$dir/corpus" "${seeds[@]}" >"$log" 2>&1 &
    fpid=$!
    while kill -0 "$fpid" 2>/dev/null; do
      sleep 20
      used=$(tree_cpu "$fpid")
      if [ "$used" -ge "$CPU_BUDGET" ]; then
        echo "campaign: $t reached $((used / 60)) CPU-minutes; stopping it"
        kill -TERM -- "-$fpid" 2>/dev/null
        break
      fi
    done
    wait "$fpid"
    frc=$?
  else
    "$bin" "${args[@]}" "$dir/corpus" "${seeds[@]}" >"$log" 2>&1
    frc=$?
  fi
  c1=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
  cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{ s += $1 } END { print s + 0 }')
  [ "$execs" -gt 0 ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ncorp=$(find "$dir/corpus" -type f | wc -l)
  # new artifacts: minimise and keep as regressions
  new=0
  while IFS= read -r a; do
    [ -n "$a" ] || continue
    grep -qxF "$a" <<<"$before" && continue
    new=$((new + 1))
    kind=$(basename "$a" | cut -d- -f1)
    out=$a
    if [ "$kind" != timeout ]; then
      "$bin" -minimize_crash=1 -runs=20000 -timeout=10 -exact_artifact_path="$a.min" "$a" >"$a.minlog" 2>&1
      [ -s "$a.min" ] && out=$a.min
    fi
    sum=$(sha1sum "$out" | cut -c1-12)
    if cmp -s "$out" "tests/fuzz/regressions/$t/$kind-$sum" 2>/dev/null; then continue; fi
    cp "$out" "tests/fuzz/regressions/$t/$kind-$sum"
    echo "campaign: FINDING $t $kind -> tests/fuzz/regressions/$t/$kind-$sum ($(stat -c %s "$out") bytes)"
  done < <(find "$dir/artifacts" -type f ! -name '*.min' ! -name '*.minlog' | sort)
  [ "$frc" -ne 0 ] && [ "$JOBS" -le 1 ] && [ "$new" -eq 0 ] && echo "campaign: $t exited $frc without an artifact (see $log)"
  rows+=("$(printf '%-20s %10s %14s %9s %8s %9s' "$t" "$(awk -v c="$cpu" 'BEGIN { printf "%.3f", c / 3600 }')" \
    "${execs:-?}" "${cov:-?}" "$ncorp" "$new")")
  tot_cpu=$(awk -v a="$tot_cpu" -v b="$cpu" 'BEGIN { print a + b }')
  tot_exec=$((tot_exec + ${execs:-0}))
  tot_find=$((tot_find + new))
done
echo
printf '%-20s %10s %14s %9s %8s %9s\n' target "CPU-hours" executions coverage corpus findings
printf '%s\n' "${rows[@]}"
printf '%-20s %10s %14s %9s %8s %9s\n' total "$(awk -v c="$tot_cpu" 'BEGIN { printf "%.3f", c / 3600 }')" "$tot_exec" - - "$tot_find"
exit "$status"

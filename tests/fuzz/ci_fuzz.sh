#!/usr/bin/env bash
# ci_fuzz.sh — per-commit fuzzing of every libFuzzer target, in two steps
# that do not flake:
#
#  1. REPLAY (must pass): every committed input of each target — its seed
#     corpus and tests/fuzz/regressions/<target>/ (ingestion: sample_data
#     too; questions: tests/data/questions.tsv, one file per question) — run
#     once under ASan + UBSan with -timeout=10 -rss_limit_mb=2048
#     -malloc_limit_mb=2048. Deterministic: a crash, leak, timeout or
#     sanitizer report here is a regression, named by its input file, and
#     fails CI (exit 1).
#  2. EXPLORATION (reported, never fails CI): a short seeded run per target
#     (-seed=CXR_FUZZ_SEED, default 1; at most CXR_FUZZ_RUNS inputs, default
#     200000, and CXR_FUZZ_SECONDS seconds, default 30), seeded with the same
#     inputs plus the malformed suite (tests/malformed/generate.py, written
#     into the build folder; CXR_FUZZ_MALFORMED_SEEDS=0 skips it). A new
#     finding is printed as FINDING (target, kind, file, top of its stack)
#     and copied to BUILD/fuzz-work/ci/findings/<target>/; the exit status
#     stays 0. Whoever reads it minimises it into tests/fuzz/regressions/
#     (the command is printed), where step 1 then holds it.
#
# Longer runs that keep their corpus: tests/fuzz/campaign.sh HOURS.
#
# Build: the fuzz build tests/fuzz/run_fuzz.sh configures (clang,
# -DCXR_FUZZ=ON -DCXR_SANITIZE=ON, the library compiled with
# -fsanitize=fuzzer-no-link) in build-fuzz/ (override: CXR_FUZZ_BUILD); when
# that build does not exist yet, run_fuzz.sh is run once for 1 s to create
# it, then every fuzz target is built there. The fuzz_question target comes
# from tests/fuzz/CMakeLists.txt (cxr_add_fuzz).
# The committed corpora are never written to: exploration works on copies
# in BUILD/fuzz-work/ci/<target>/corpus (emptied at each run).
#
# Usage: tests/fuzz/ci_fuzz.sh [TARGET...]   (default: all six)
# Environment: CXR_FUZZ_SECONDS, CXR_FUZZ_RUNS, CXR_FUZZ_SEED, CXR_FUZZ_BUILD,
#   CXR_FUZZ_BUILD_JOBS (2), CXR_FUZZ_EXPLORE=0 (replay only).
# Exit status: 0 when every replay passed (exploration findings included),
# 1 when a replay failed or a target could not be built, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/../.."
SECS=${CXR_FUZZ_SECONDS:-30}
RUNS=${CXR_FUZZ_RUNS:-200000}
SEED=${CXR_FUZZ_SEED:-1}
BUILD=${CXR_FUZZ_BUILD:-build-fuzz}
export CXR_FUZZ_BUILD=$BUILD
for v in SECS RUNS SEED; do
  if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
    echo "ci_fuzz: CXR_FUZZ_$v must be a positive integer" >&2
    exit 2
  fi
done
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_ingest fuzz_gguf fuzz_frame fuzz_question fuzz_plugin_request fuzz_jls)
WORK=$BUILD/fuzz-work/ci
FINDINGS=$WORK/findings
mkdir -p "$WORK"

# ---- build (configured by run_fuzz.sh, not here)
if ! grep -qs '^CXR_FUZZ:BOOL=ON' "$BUILD/CMakeCache.txt"; then
  echo "ci_fuzz: configuring $BUILD through tests/fuzz/run_fuzz.sh (1-second smoke run)"
  tests/fuzz/run_fuzz.sh 1 >"$WORK/configure.log" 2>&1 || { cat "$WORK/configure.log"; echo "ci_fuzz: run_fuzz.sh failed" >&2; exit 1; }
fi
if ! cmake --build "$BUILD" -j "${CXR_FUZZ_BUILD_JOBS:-2}" --target "${TARGETS[@]}" >"$WORK/build.log" 2>&1; then
  tail -30 "$WORK/build.log"
  grep -q "fuzz_question" "$WORK/build.log" && grep -qi "unknown target" "$WORK/build.log" &&
    echo "ci_fuzz: no fuzz_question target: tests/fuzz/CMakeLists.txt must define it (cxr_add_fuzz)" >&2
  echo "ci_fuzz: build failed" >&2
  exit 1
fi

# ---- seeds that are generated, not committed
QSEEDS=$WORK/question-seeds
rm -rf "$QSEEDS" && mkdir -p "$QSEEDS"
awk -F '\t' -v dir="$QSEEDS" '!/^#/ && NF { f = sprintf("%s/q%04d", dir, NR); printf "%s", $1 > f; close(f) }' \
  tests/data/questions.tsv
MSEEDS=$WORK/malformed-seeds
if [ "${CXR_FUZZ_EXPLORE:-1}" != 0 ] && [ "${CXR_FUZZ_MALFORMED_SEEDS:-1}" != 0 ] &&
   [[ " ${TARGETS[*]} " == *" fuzz_ingest "* ]]; then
  rm -rf "$MSEEDS"
  /usr/bin/python3 tests/malformed/generate.py "$MSEEDS" >/dev/null 2>"$WORK/malformed-seeds.log" ||
    echo "ci_fuzz: malformed seeds not generated (see $WORK/malformed-seeds.log)"
  rm -f "$MSEEDS/manifest.json"
fi

# committed (replayed) inputs of a target
committed_for() {
  case $1 in
    fuzz_ingest) echo tests/fuzz/corpus sample_data ;;
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
    fuzz_ingest) echo 4194304 ;;   # run_fuzz.sh's; the malformed bombs are ~4 MB
    fuzz_gguf) echo 262144 ;;      # twice the largest seed model
    fuzz_frame) echo 65536 ;;
    fuzz_question) echo 4160 ;;    # past CXR_QUESTION_MAX_BYTES (2048), the "too long" path
    fuzz_plugin_request) echo 70000 ;; # past OP_MAX_BODY_BYTES (64 KiB), the 413 path
    fuzz_jls) echo 65536 ;;
  esac
}
LIMITS=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10)

# "kind file: top frames" of the first report in a libFuzzer log
top_of_stack() {
  awk '/ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer|UndefinedBehaviorSanitizer)|runtime error:|^ALARM|deadly signal/ && !e { e = $0 }
       e && /^ +#[0-9]+ / && n < 4 && !/libFuzzer|fuzzer::|__sanitizer|__asan|__ubsan|libc\.so|compiler-rt/ {
         sub(/^ +/, ""); f = f (n ? " <- " : "") $0; n++ }
       END { print (e ? e : "(no sanitizer report)"); print "    top: " (f ? f : "(no frame)") }' "$1"
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
TIMEFORMAT='%U %S'
fail=0
n_findings=0
summary=()
for t in "${TARGETS[@]}"; do
  bin=$BUILD/tests/fuzz/$t
  [ -x "$bin" ] || bin=$BUILD/$t
  if [ ! -x "$bin" ]; then
    echo "ci_fuzz: $t was not built" >&2
    fail=1
    summary+=("$(printf '%-20s %8s %12s %10s %8s  %s' "$t" - - - - "NOT BUILT")")
    continue
  fi
  dir=$WORK/$t
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/replay-artifacts"

  # ---- 1. replay: each committed input once, by name
  inputs=()
  for s in $(committed_for "$t"); do
    [ -e "$s" ] || continue
    while IFS= read -r -d '' f; do inputs+=("$f"); done < <(find "$s" -type f ! -name '.*' ! -name '*.py' ! -name '*.json' -print0 | sort -z)
  done
  rlog=$dir/replay.log
  "$bin" "${LIMITS[@]}" -artifact_prefix="$dir/replay-artifacts/" "${inputs[@]}" >"$rlog" 2>&1
  rrc=$?
  replay="${#inputs[@]} ok"
  if [ "$rrc" -ne 0 ]; then
    fail=1
    bad=$(grep '^Running: ' "$rlog" | tail -1 | sed 's/^Running: //')
    replay="FAILED"
    echo "ci_fuzz: REPLAY FAILED: $t on ${bad:-?} (exit $rrc)"
    top_of_stack "$rlog" | sed 's/^/    /'
    echo "    log: $rlog"
  fi

  # ---- 2. exploration: seeded, bounded, reported
  explore="-"
  runs=- cpu=- cov=-
  if [ "${CXR_FUZZ_EXPLORE:-1}" != 0 ]; then
    seeds=()
    for s in $(committed_for "$t") $([ "$t" = fuzz_ingest ] && echo "$MSEEDS"); do [ -d "$s" ] && seeds+=("$s"); done
    log=$dir/explore.log
    { time "$bin" -seed="$SEED" -runs="$RUNS" -max_total_time="$SECS" -max_len="$(max_len_for "$t")" "${LIMITS[@]}" \
        -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$dir/corpus" "${seeds[@]}" \
        >"$log" 2>&1; } 2>"$dir/cpu"
    erc=$?
    read -r u s <"$dir/cpu"
    cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.1f", u + s }')
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    explore="no finding"
    found=0
    for a in "$dir/artifacts/"*; do
      [ -f "$a" ] || continue
      found=$((found + 1))
      mkdir -p "$FINDINGS/$t"
      cp "$a" "$FINDINGS/$t/"
      kind=$(basename "$a" | cut -d- -f1)
      echo "ci_fuzz: FINDING (reported, not failing CI): target $t, $kind, $FINDINGS/$t/$(basename "$a")"
      top_of_stack "$log" | sed 's/^/    /'
      echo "    minimise: $bin -minimize_crash=1 -runs=100000 -exact_artifact_path=$a.min $a"
      echo "    then: cp $a.min tests/fuzz/regressions/$t/<kind>-<what>, fix the bug; the replay step holds it"
    done
    if [ "$found" -eq 0 ] && [ "$erc" -ne 0 ]; then
      found=1
      echo "ci_fuzz: FINDING (reported, not failing CI): target $t, exit $erc without an artifact; log $log"
      top_of_stack "$log" | sed 's/^/    /'
    fi
    [ "$found" -gt 0 ] && explore="$found finding(s)" && n_findings=$((n_findings + found))
  fi
  summary+=("$(printf '%-20s %8s %12s %10s %8s  %s' "$t" "$replay" "${runs:-?}" "$cpu" "${cov:-?}" "$explore")")
done

echo
printf '%-20s %8s %12s %10s %8s  %s\n' target replay "inputs tried" "CPU s" coverage exploration
printf '%s\n' "${summary[@]}"
echo "ci_fuzz: seed $SEED, at most $RUNS runs / $SECS s per target; $n_findings exploration finding(s)$([ "$n_findings" -gt 0 ] && echo " in $FINDINGS")"
[ "$fail" -eq 0 ] && echo "ci_fuzz: every replay passed" || echo "ci_fuzz: REPLAY FAILED (see above)"
exit "$fail"

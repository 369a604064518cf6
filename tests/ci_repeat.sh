#!/usr/bin/env bash
# ci_repeat.sh N [REV] — does CI flake? Run `.ci/run` N times, each on a new
# clone of this repository at REV (default HEAD) with ../shared beside it, as
# CI does, and record every run.
#
# One line per run is appended to RESULTS (CXR_REPEAT_RESULTS, default
# build-ci-repeat/results.tsv): start time (UTC), commit, run number, exit
# status, minutes, the release and sanitizer ctest totals, the fuzzing
# replay/exploration summary and the planted-bug check. Each run's full log
# stays in build-ci-repeat/run-<commit>-<n>.log. Scratch clones go under
# CXR_REPEAT_DIR (default /tmp/cxr-ci-repeat), one at a time, removed after
# a pass and kept after a failure for a look.
#
# The clone sees ../shared only when this checkout has one beside it
# (linked, read-only as CI's is); without it the data-dependent tests skip,
# as they would in CI without it.
# Exit status: 0 every run passed, 1 one or more failed, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
  echo "usage: $0 N [REV]" >&2
  exit 2
fi
N=$1
REV=${2:-HEAD}
COMMIT=$(git rev-parse --short "$REV") || exit 2
ROOT=$PWD
OUTDIR=$ROOT/build-ci-repeat
RESULTS=${CXR_REPEAT_RESULTS:-$OUTDIR/results.tsv}
SCRATCH=${CXR_REPEAT_DIR:-/tmp/cxr-ci-repeat}
mkdir -p "$OUTDIR"
[ -s "$RESULTS" ] || printf 'start_utc\tcommit\trun\texit\tminutes\trelease\tsanitizer\tfuzz\tplanted\n' >"$RESULTS"
SHARED=
[ -d "$ROOT/../shared" ] && SHARED=$(cd "$ROOT/../shared" && pwd)
fails=0
for i in $(seq 1 "$N"); do
  rm -rf "$SCRATCH"
  mkdir -p "$SCRATCH"
  git clone -q "$ROOT" "$SCRATCH/repo" && git -C "$SCRATCH/repo" checkout -q "$COMMIT" || exit 2
  [ -n "$SHARED" ] && ln -s "$SHARED" "$SCRATCH/shared"
  log=$OUTDIR/run-$COMMIT-$i.log
  start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  t0=$(date +%s)
  (cd "$SCRATCH/repo" && bash .ci/run) >"$log" 2>&1
  rc=$?
  mins=$(awk -v s="$(( $(date +%s) - t0 ))" 'BEGIN { printf "%.1f", s / 60 }')
  # ctest's "N% tests passed, F tests failed out of T", release first
  totals=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | sed -E 's/.*passed, ([0-9]+) tests failed out of ([0-9]+).*/\2 run, \1 failed/')
  rel=$(sed -n 1p <<<"$totals")
  san=$(sed -n 2p <<<"$totals")
  fz=$(grep -E '^ci_fuzz: (every replay passed|REPLAY FAILED)' "$log" | tail -1 | sed 's/^ci_fuzz: //')
  nf=$(grep -oE '[0-9]+ exploration finding\(s\)' "$log" | tail -1)
  pl=$(grep -E '^check_planted: (the fuzzing step catches|FAILED)' "$log" | head -1 | sed 's/^check_planted: //; s/ (scratch.*//')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$start" "$COMMIT" "$i" "$rc" "$mins" "${rel:--}" "${san:--}" \
    "${fz:--}${nf:+; $nf}" "${pl:--}" >>"$RESULTS"
  echo "ci_repeat: run $i/$N of $COMMIT: exit $rc in $mins min (log $log)"
  if [ "$rc" -eq 0 ]; then rm -rf "$SCRATCH"; else fails=$((fails + 1)); echo "ci_repeat: kept $SCRATCH"; break; fi
done
echo "ci_repeat: $fails failure(s); results in $RESULTS"
[ "$fails" -eq 0 ]

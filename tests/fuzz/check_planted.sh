#!/usr/bin/env bash
# check_planted.sh — does the per-commit fuzzing still catch a bug?
#
# A green ci_fuzz.sh means little if it would also be green with a bug in the
# code. This script copies the working tree (git's tracked and unignored
# files) into a scratch folder, plants a real memory bug there — a word
# copied into a 64-byte stack buffer without a length check in the question
# parser, cxr_question_parse() — builds the scratch tree's fuzz_question target and runs
# the scratch tree's own tests/fuzz/ci_fuzz.sh on it, twice:
#
#  1. as CI runs it: the seeded exploration must report the bug as a FINDING
#     (target fuzz_question, a stack-buffer-overflow, a stack through
#     cxr_question_parse) and still exit 0, since exploration never fails CI;
#  2. with the found input committed as a regression in the scratch tree:
#     the replay step must now fail (exit 1, "REPLAY FAILED", the file named).
#
# The repository itself is never modified. Scratch folder: CXR_PLANTED_DIR
# (default build-fuzz-planted, emptied first). Needs clang with libFuzzer, as
# ci_fuzz.sh does.
# Exit status: 0 both checks passed, 1 one failed, 2 the scratch tree could
# not be made or the plant did not apply.
set -uo pipefail
cd "$(dirname "$0")/../.."
SCRATCH=${CXR_PLANTED_DIR:-build-fuzz-planted}
case $SCRATCH in /*) ;; *) SCRATCH=$PWD/$SCRATCH ;; esac
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH/src"
if ! git ls-files -z -c -o --exclude-standard | xargs -0 cp --parents -t "$SCRATCH/src" 2>"$SCRATCH/copy.log"; then
  echo "check_planted: could not copy the tree (git ls-files; see $SCRATCH/copy.log)" >&2
  exit 2
fi
SRC=$SCRATCH/src

# ---- plant: a stack overflow, reachable from any question with a run of more
# than 63 ASCII letters (none of the seeds has one; libFuzzer's repeated-byte
# insertion makes one often)
/usr/bin/python3 - "$SRC/plugin/question/question.c" <<'EOF' || exit 2
import sys
p = sys.argv[1]
s = open(p).read()
anchor = "    int has_cjk = 0;\n"
if s.count(anchor) != 1:
    sys.exit("check_planted: the plant's anchor line is not in question.c once; update check_planted.sh")
plant = (
    "    for (const char *pw = utf8; *pw;) { /* PLANTED: a word copied into a fixed buffer, unchecked */\n"
    "        static const char letters[] = \"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\";\n"
    "        size_t w = strspn(pw, letters);\n"
    "        char word[64];\n"
    "        memcpy(word, pw, w);\n"
    "        word[w] = 0;\n"
    "        if (word[0] == '#') has_planted = 1;\n"
    "        pw += w ? w : 1;\n"
    "    }\n")
s = s.replace(anchor, anchor + plant)
s = s.replace("int cxr_question_parse(", "static volatile int has_planted;\nint cxr_question_parse(", 1)
open(p, "w").write(s)
EOF
grep -q 'PLANTED' "$SRC/plugin/question/question.c" || { echo "check_planted: plant not applied" >&2; exit 2; }

cd "$SRC" || exit 2
echo "check_planted: scratch tree $SRC, bug planted in plugin/question/question.c"
if ! CXR_FUZZ_CONFIGURE_ONLY=1 tests/fuzz/run_fuzz.sh 0 >"$SCRATCH/configure.log" 2>&1; then
  tail -20 "$SCRATCH/configure.log"
  echo "check_planted: configuring the scratch fuzz build failed" >&2
  exit 2
fi

status=0
# ---- 1. exploration reports it, CI stays green
CXR_FUZZ_MALFORMED_SEEDS=0 tests/fuzz/ci_fuzz.sh fuzz_question >"$SCRATCH/explore.out" 2>&1
erc=$?
finding=$(grep -m1 'FINDING (reported, not failing CI): target fuzz_question' "$SCRATCH/explore.out")
if [ "$erc" -eq 0 ] && [ -n "$finding" ] && grep -q 'stack-buffer-overflow' "$SCRATCH/explore.out" &&
   grep -q 'top: .*cxr_question_parse' "$SCRATCH/explore.out"; then
  echo "check_planted: ok: exploration reported the planted bug and exited 0:"
  grep -A2 -m1 'FINDING' "$SCRATCH/explore.out" | sed "s|$SRC/||g; s/^/    /"
  grep -A1 '^target' "$SCRATCH/explore.out" | sed 's/^/    /'
else
  echo "check_planted: FAILED: exploration exited $erc and did not report the planted stack overflow as a finding"
  tail -25 "$SCRATCH/explore.out" | sed 's/^/    /'
  status=1
fi

# ---- 2. committed as a regression, the replay fails
art=$(ls build-fuzz/fuzz-work/ci/findings/fuzz_question/crash-* 2>/dev/null | head -1)
if [ -n "$art" ]; then
  mkdir -p tests/fuzz/regressions/fuzz_question
  cp "$art" tests/fuzz/regressions/fuzz_question/crash-planted
  CXR_FUZZ_EXPLORE=0 tests/fuzz/ci_fuzz.sh fuzz_question >"$SCRATCH/replay.out" 2>&1
  rrc=$?
  if [ "$rrc" -eq 1 ] && grep -q 'REPLAY FAILED: fuzz_question on .*crash-planted' "$SCRATCH/replay.out"; then
    echo "check_planted: ok: with the input committed as a regression the replay fails (exit 1):"
    grep -m1 'REPLAY FAILED' "$SCRATCH/replay.out" | sed "s|$SRC/||; s/^/    /"
  else
    echo "check_planted: FAILED: the replay of the planted crash exited $rrc without naming it"
    tail -15 "$SCRATCH/replay.out" | sed 's/^/    /'
    status=1
  fi
else
  echo "check_planted: FAILED: no crash artifact to replay"
  status=1
fi
[ "$status" -eq 0 ] && echo "check_planted: the fuzzing step catches a planted bug (scratch tree: $SRC)"
exit "$status"

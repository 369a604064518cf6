/*
 * check.h — the one assertion macro of the C tests: counts checks, prints
 * the first line of every failure with file and line, never aborts, so one
 * run reports every mismatch. main() ends with `return CHECK_SUMMARY();`.
 *
 * A test whose stdout is data (test_tokenizer's ids) defines CHECK_OUT as
 * stderr before including this; one that may fail thousands of times in a
 * row (test_gemm's element loops) sets CHECK_MAX_PRINTED.
 */
#ifndef CXR_TEST_CHECK_H
#define CXR_TEST_CHECK_H

#include <stdio.h>

#ifndef CHECK_OUT
#define CHECK_OUT stdout
#endif
#ifndef CHECK_MAX_PRINTED
#define CHECK_MAX_PRINTED 1000000
#endif

static int failures, checks;

#define CHECK(cond, ...)                                           \
    do {                                                           \
        checks++;                                                  \
        if (!(cond) && ++failures <= CHECK_MAX_PRINTED) {          \
            fprintf(CHECK_OUT, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(CHECK_OUT, __VA_ARGS__);                       \
            fprintf(CHECK_OUT, "\n");                              \
        }                                                          \
    } while (0)

/* "N passed, N failed" (read by CI) and the exit status. */
#define CHECK_SUMMARY() \
    (fprintf(CHECK_OUT, "%d passed, %d failed\n", checks - failures, failures), failures ? 1 : 0)

#endif

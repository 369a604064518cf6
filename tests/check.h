/*
 * check.h — the one assertion macro of the C unit tests: counts checks,
 * prints the first line of every failure with file and line, never aborts,
 * so one run reports every mismatch. main() ends with CHECK_SUMMARY().
 */
#ifndef CXR_TEST_CHECK_H
#define CXR_TEST_CHECK_H

#include <stdio.h>

static int failures, checks;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        checks++;                                         \
        if (!(cond)) {                                    \
            failures++;                                   \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);   \
            printf(__VA_ARGS__);                          \
            printf("\n");                                 \
        }                                                 \
    } while (0)

/* "N passed, N failed" (read by CI) and the exit status. */
#define CHECK_SUMMARY() (printf("%d passed, %d failed\n", checks - failures, failures), failures ? 1 : 0)

#endif

/*
 * test_valstats.c — the statistics of `cxrvqa validate` (plugin/answer/
 * valstats.c) against independent twins: the AUC against a brute-force
 * count over every positive-negative pair (ties half) on random scores
 * with many ties; the bootstrap CI seeded and deterministic, bracketing the
 * AUC; Platt scaling recovering known (a, b) from synthetic labels drawn
 * from σ(a·z + b) and reaching a stationary point of its loss; ECE on cases
 * worked out by hand; the operating point and band on hand-made cases.
 */
#include "check.h"
#include "valstats.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 88172645463325252ULL;
static double uniform(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (rng >> 11) * (1.0 / 9007199254740992.0);
}

static double brute_auc(const float *s, const uint8_t *y, int n) {
    double num = 0, pairs = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (y[i] && !y[j]) {
                pairs++;
                num += s[i] > s[j] ? 1 : s[i] == s[j] ? 0.5 : 0;
            }
    return pairs ? num / pairs : NAN;
}

static void test_auc(void) {
    enum { N = 600 };
    static float s[N];
    static uint8_t y[N];
    for (int trial = 0; trial < 20; trial++) {
        int n = 50 + trial * 25;
        for (int i = 0; i < n; i++) {
            y[i] = uniform() < 0.3;
            /* coarse scores: many ties; positives shifted up by a trial-dependent amount */
            s[i] = (float)floor((uniform() + (y[i] ? 0.05 * trial : 0)) * 12) / 4;
        }
        double a = valstats_auc(s, y, n), b = brute_auc(s, y, n);
        CHECK(fabs(a - b) < 1e-12, "trial %d: AUC %.15f, pair count %.15f", trial, a, b);
    }
    float t[4] = {1, 2, 3, 4};
    uint8_t all[4] = {1, 1, 1, 1}, sep[4] = {0, 0, 1, 1}, rev[4] = {1, 1, 0, 0};
    CHECK(isnan(valstats_auc(t, all, 4)), "one class only: NaN");
    CHECK(valstats_auc(t, sep, 4) == 1.0, "separated: 1");
    CHECK(valstats_auc(t, rev, 4) == 0.0, "reversed: 0");
    float tie[4] = {1, 1, 1, 1};
    CHECK(valstats_auc(tie, sep, 4) == 0.5, "all tied: 0.5");
}

static void test_ci(void) {
    enum { N = 300 };
    static float s[N];
    static uint8_t y[N];
    for (int i = 0; i < N; i++) {
        y[i] = i % 3 == 0;
        s[i] = (float)(uniform() + 0.4 * y[i]);
    }
    double auc = valstats_auc(s, y, N), lo, hi, lo2, hi2, lo3, hi3;
    CHECK(valstats_auc_ci(s, y, N, 500, 7, &lo, &hi) == 0, "ci ok");
    valstats_auc_ci(s, y, N, 500, 7, &lo2, &hi2);
    valstats_auc_ci(s, y, N, 500, 8, &lo3, &hi3);
    CHECK(lo == lo2 && hi == hi2, "same seed, same CI: [%f, %f] vs [%f, %f]", lo, hi, lo2, hi2);
    CHECK(lo != lo3 || hi != hi3, "another seed, another CI");
    CHECK(lo < auc && auc < hi, "CI [%f, %f] brackets the AUC %f", lo, hi, auc);
    /* the width of a 95% CI of an AUC near 0.8 with 100 positives and 200 negatives is about
       ±0.05 (Hanley-McNeil SE ≈ 0.027): between 0.05 and 0.2 in all */
    CHECK(hi - lo > 0.05 && hi - lo < 0.2, "CI width %f", hi - lo);
    float sep[6] = {0, 1, 2, 3, 4, 5};
    uint8_t ys[6] = {0, 0, 0, 1, 1, 1};
    valstats_auc_ci(sep, ys, 6, 200, 1, &lo, &hi);
    CHECK(lo == 1 && hi == 1, "separated: CI [1, 1], got [%f, %f]", lo, hi);
    uint8_t one[6] = {1, 1, 1, 1, 1, 1};
    valstats_auc_ci(sep, one, 6, 200, 1, &lo, &hi);
    CHECK(isnan(lo) && isnan(hi), "one class: NaN CI");
}

static void test_platt(void) {
    enum { N = 20000 };
    static float z[N];
    static uint8_t y[N];
    const double A = 0.7, B = -1.3;
    for (int i = 0; i < N; i++) {
        z[i] = (float)(uniform() * 12 - 6);
        y[i] = uniform() < 1 / (1 + exp(-(A * z[i] + B)));
    }
    double a, b;
    CHECK(valstats_platt(z, y, N, &a, &b) == 0, "platt ok");
    /* standard errors at N = 20000 are about 0.015 (a) and 0.03 (b) */
    CHECK(fabs(a - A) < 0.06 && fabs(b - B) < 0.12, "recovered a %.3f b %.3f (true %.2f %.2f)", a, b, A, B);
    /* a stationary point of the log loss (ridge 1e-6): the gradient vanishes */
    double g0 = 1e-6 * a, g1 = 1e-6 * b;
    for (int i = 0; i < N; i++) {
        double r = 1 / (1 + exp(-(a * z[i] + b))) - y[i];
        g0 += r * z[i];
        g1 += r;
    }
    CHECK(fabs(g0) < 1e-4 * N && fabs(g1) < 1e-4 * N, "gradient (%g, %g) ≈ 0", g0, g1);
    /* a z that is 4x too steep: the fit shrinks it back */
    for (int i = 0; i < N; i++) z[i] *= 4;
    valstats_platt(z, y, N, &a, &b);
    CHECK(fabs(a - A / 4) < 0.02, "scaled z: a %.4f (true %.4f)", a, A / 4);
    CHECK(valstats_platt(z, y, 0, &a, &b) == -1, "no cases: -1");
}

static void test_ece(void) {
    /* by hand: bins [0,.1): p .05 y 0 -> .05; [.1,.2): p .15 y 1 -> .85; [.9,1]: p .95,.95 y 1,0 -> .45
       weighted: (.05 + .85 + 2 * .45) / 4 = .45 */
    float p[4] = {0.05f, 0.15f, 0.95f, 0.95f};
    uint8_t y[4] = {0, 1, 1, 0};
    double e = valstats_ece(p, y, 4, 10);
    CHECK(fabs(e - 0.45) < 1e-6, "ECE %f, by hand 0.45", e);
    /* perfectly calibrated within each bin: p .25 with 1 of 4 positive, p .75 with 3 of 4 */
    float q[8] = {0.25f, 0.25f, 0.25f, 0.25f, 0.75f, 0.75f, 0.75f, 0.75f};
    uint8_t z[8] = {1, 0, 0, 0, 1, 1, 1, 0};
    CHECK(fabs(valstats_ece(q, z, 8, 10)) < 1e-6, "calibrated: ECE 0");
    float one[1] = {1.0f};
    uint8_t yes[1] = {0};
    CHECK(fabs(valstats_ece(one, yes, 1, 10) - 1) < 1e-9, "p = 1 counts in the last bin");
    CHECK(isnan(valstats_ece(p, y, 0, 10)), "no cases: NaN");
}

static void test_operating_point(void) {
    /* 10 positives at .1 .. 1.0 and 10 negatives at .05 .. .50 */
    float p[20];
    uint8_t y[20];
    for (int i = 0; i < 10; i++) {
        p[i] = (float)(i + 1) / 10;
        y[i] = 1;
        p[10 + i] = (float)(i + 1) / 20;
        y[10 + i] = 0;
    }
    valstats_point pt;
    CHECK(valstats_operating_point(p, y, 20, 0.90, &pt) == 0, "point ok");
    /* the 9th highest positive is .2: 9 of 10 positives have p >= .2 */
    CHECK(fabs(pt.threshold - 0.2) < 1e-6, "threshold %f (by hand 0.2)", pt.threshold);
    CHECK(fabs(pt.sensitivity - 0.9) < 1e-12, "sensitivity %f", pt.sensitivity);
    /* negatives >= .2: .20 .. .50 = 7 of 10 -> specificity .3 */
    CHECK(fabs(pt.specificity - 0.3) < 1e-12, "specificity %f", pt.specificity);
    /* low: ceil(.97 * 10) = 10th highest positive = .1; high: ceil(.9 * 10) = 9th lowest negative = .45 */
    CHECK(fabs(pt.low - 0.1) < 1e-6 && fabs(pt.high - 0.45) < 1e-6, "band [%f, %f] (by hand [0.1, 0.45])", pt.low,
          pt.high);
    CHECK(valstats_operating_point(p, y, 20, 0.5, &pt) == 0 && fabs(pt.threshold - 0.6) < 1e-6,
          "target .5: 5th highest positive .6, got %f", pt.threshold);
    CHECK(valstats_operating_point(p, y, 20, 1.0, &pt) == 0 && fabs(pt.threshold - 0.1) < 1e-6 &&
              pt.sensitivity == 1.0,
          "target 1: the lowest positive");
    uint8_t none[3] = {0, 0, 0};
    CHECK(valstats_operating_point(p, none, 3, 0.9, &pt) == -1, "no positives: -1");
}

int main(void) {
    test_auc();
    test_ci();
    test_platt();
    test_ece();
    test_operating_point();
    return CHECK_SUMMARY();
}

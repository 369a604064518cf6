/*
 * valstats.h — the statistics of site validation (internal to libcxrvqa and
 * the cxrvqa executable): ROC AUC with a seeded percentile-bootstrap CI,
 * Platt scaling, expected calibration error, the operating threshold at a
 * target sensitivity and the uncertain band. The same rules as the shipped
 * model's recipe (model/tools/train/metrics.py), so that a site-validated
 * file means what the shipped file means. Pure computation: no files, no
 * model, no allocation beyond the call.
 *
 *   double auc = valstats_auc(z, y, n), lo, hi;
 *   valstats_auc_ci(z, y, n, 1000, 1234, &lo, &hi);
 *   double a, b;
 *   if (valstats_platt(z, y, n, &a, &b) == 0) ... p[i] = valstats_sigmoid(a * z[i] + b);
 *   valstats_point pt; valstats_operating_point(p, y, n, 0.90, &pt);
 */
#ifndef CXR_VALSTATS_H
#define CXR_VALSTATS_H

#include <stdint.h>

#define VALSTATS_ECE_BINS 10          /* equal-width bins of p (as model/tools/train/eval_engine.py) */
#define VALSTATS_BOOTSTRAP 1000       /* resamples for the AUC CI (as the shipped model's recipe) */
#define VALSTATS_SEED 1234u           /* the shipped recipe's seed (model/train_config.json) */
#define VALSTATS_CALIB_MIN_POS 20     /* fewest positives and negatives for a Platt fit (calib_min_pos) */
#define VALSTATS_BAND_SENS 0.97       /* the band's lower edge: sensitivity >= max(this, the target) */
#define VALSTATS_BAND_SPEC 0.90       /* the band's upper edge: specificity >= this above it */

/* σ(x) without overflow. */
double valstats_sigmoid(double x);

/* ROC AUC of scores s for labels y (0 / 1): the Mann-Whitney statistic with
 * ties counted half, O(n log n). NaN when a class is missing or n < 2 or on
 * allocation failure. */
double valstats_auc(const float *s, const uint8_t *y, int n);

/* Percentile 95% CI (2.5th and 97.5th percentiles, linearly interpolated
 * as NumPy's default) of the AUC over n_boot resamples of the n cases with
 * replacement, drawn by a xorshift64* generator from seed (deterministic);
 * resamples missing a class are skipped. NaN, NaN when the AUC is NaN.
 * 0, or -1 on allocation failure. */
int valstats_auc_ci(const float *s, const uint8_t *y, int n, int n_boot, uint64_t seed, double *lo, double *hi);

/* Platt scaling: a, b minimising the log loss of σ(a·z + b) plus a ridge of
 * 0.5e-6·(a² + b²) (Newton's method from a = 1, b = 0 with backtracking, as
 * metrics.py platt_fit). 0, or -1 when n < 1. */
int valstats_platt(const float *z, const uint8_t *y, int n, double *a, double *b);

/* Expected calibration error over `bins` equal-width bins of p on [0, 1]
 * (the last bin closed): Σ_b (n_b / n) · |mean p_b − mean y_b|. NaN for n = 0. */
double valstats_ece(const float *p, const uint8_t *y, int n, int bins);

typedef struct {
    double threshold;     /* highest p with sensitivity >= target (cases with p >= threshold called positive) */
    double low, high;     /* the uncertain band */
    double sensitivity, specificity; /* of p >= threshold on these cases */
} valstats_point;

/* The operating point on (calibrated) p, metrics.py operating_point with
 * the target sensitivity as a parameter: threshold = the ⌈target·n_pos⌉-th
 * highest positive p; low = min(threshold, the ⌈max(0.97, target)·n_pos⌉-th
 * highest positive p); high = max(threshold, the ⌈0.90·n_neg⌉-th lowest
 * negative p). -1 (nothing written) without positives; 0 otherwise. */
int valstats_operating_point(const float *p, const uint8_t *y, int n, double target, valstats_point *out);

/* Sensitivity and specificity of p >= threshold (NaN for a missing class). */
void valstats_sens_spec(const float *p, const uint8_t *y, int n, double threshold, double *sens, double *spec);

#endif

/*
 * valstats.c — the statistics of site validation (valstats.h): AUC and its
 * bootstrap CI, Platt scaling, ECE, the operating point and the uncertain
 * band, written to give what model/tools/train/metrics.py gives on the same
 * numbers. It owns no policy beyond those rules and must not print or keep
 * state between calls.
 */
#include "valstats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double valstats_sigmoid(double x) { return 0.5 * (1.0 + tanh(0.5 * x)); }

/* ---------------------------------------------------------------- AUC */

typedef struct {
    float s;
    uint8_t y;
} scored;

static int cmp_scored(const void *a, const void *b) {
    float x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* AUC over c[0..n) (sorted here, in place). */
static double auc_sorted(scored *c, int n) {
    long long npos = 0;
    for (int i = 0; i < n; i++) npos += c[i].y != 0;
    long long nneg = n - npos;
    if (npos == 0 || nneg == 0) return NAN;
    qsort(c, (size_t)n, sizeof *c, cmp_scored);
    double rank_pos = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && c[j].s == c[i].s) j++;
        double avg = (i + 1 + j) / 2.0; /* ranks i+1 .. j, averaged over the tie */
        for (int k = i; k < j; k++)
            if (c[k].y) rank_pos += avg;
        i = j;
    }
    return (rank_pos - (double)npos * (npos + 1) / 2.0) / ((double)npos * nneg);
}

double valstats_auc(const float *s, const uint8_t *y, int n) {
    if (n < 2) return NAN;
    scored *c = malloc((size_t)n * sizeof *c);
    if (!c) return NAN;
    for (int i = 0; i < n; i++) c[i] = (scored){s[i], (uint8_t)(y[i] != 0)};
    double a = auc_sorted(c, n);
    free(c);
    return a;
}

static uint64_t xorshift64s(uint64_t *st) {
    uint64_t x = *st;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *st = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* NumPy's default percentile (linear interpolation) of sorted v[0..m). */
static double percentile(const double *v, int m, double q) {
    double pos = q / 100.0 * (m - 1);
    int k = (int)floor(pos);
    if (k >= m - 1) return v[m - 1];
    return v[k] + (pos - k) * (v[k + 1] - v[k]);
}

int valstats_auc_ci(const float *s, const uint8_t *y, int n, int n_boot, uint64_t seed, double *lo, double *hi) {
    *lo = *hi = NAN;
    if (isnan(valstats_auc(s, y, n)) || n_boot < 1) return 0;
    scored *c = malloc((size_t)n * sizeof *c);
    double *vals = malloc((size_t)n_boot * sizeof *vals);
    if (!c || !vals) {
        free(c);
        free(vals);
        return -1;
    }
    uint64_t st = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    if (!st) st = 1;
    int m = 0;
    for (int b = 0; b < n_boot; b++) {
        for (int i = 0; i < n; i++) {
            int k = (int)(xorshift64s(&st) % (uint64_t)n);
            c[i] = (scored){s[k], (uint8_t)(y[k] != 0)};
        }
        double a = auc_sorted(c, n);
        if (!isnan(a)) vals[m++] = a;
    }
    if (m > 0) {
        qsort(vals, (size_t)m, sizeof *vals, cmp_double);
        *lo = percentile(vals, m, 2.5);
        *hi = percentile(vals, m, 97.5);
    }
    free(c);
    free(vals);
    return 0;
}

/* -------------------------------------------------------------- Platt */

#define PLATT_RIDGE 1e-6

static double log1pexp(double t) { return t > 0 ? t + log1p(exp(-t)) : log1p(exp(t)); }

static double platt_loss(const float *z, const uint8_t *y, int n, double a, double b) {
    double l = 0;
    for (int i = 0; i < n; i++) {
        double t = a * z[i] + b;
        l += log1pexp(t) - (y[i] ? t : 0);
    }
    return l + 0.5 * PLATT_RIDGE * (a * a + b * b);
}

int valstats_platt(const float *z, const uint8_t *y, int n, double *a_out, double *b_out) {
    if (n < 1) return -1;
    double a = 1, b = 0, cur = platt_loss(z, y, n, a, b);
    for (int it = 0; it < 100; it++) {
        double g0 = PLATT_RIDGE * a, g1 = PLATT_RIDGE * b, h00 = PLATT_RIDGE, h01 = 0, h11 = PLATT_RIDGE;
        for (int i = 0; i < n; i++) {
            double p = valstats_sigmoid(a * z[i] + b), r = p - (y[i] ? 1 : 0), w = p * (1 - p);
            g0 += r * z[i];
            g1 += r;
            h00 += w * z[i] * z[i];
            h01 += w * z[i];
            h11 += w;
        }
        double det = h00 * h11 - h01 * h01;
        if (!(fabs(det) > 0)) break;
        double s0 = (h11 * g0 - h01 * g1) / det, s1 = (h00 * g1 - h01 * g0) / det;
        double t = 1.0, nl = cur;
        while (t > 1e-6) { /* backtracking: the loss must not rise */
            nl = platt_loss(z, y, n, a - t * s0, b - t * s1);
            if (nl <= cur) break;
            t *= 0.5;
        }
        if (t <= 1e-6) break;
        a -= t * s0;
        b -= t * s1;
        cur = nl;
        if (fmax(fabs(t * s0), fabs(t * s1)) < 1e-10) break;
    }
    *a_out = a;
    *b_out = b;
    return 0;
}

/* ---------------------------------------------------------------- ECE */

double valstats_ece(const float *p, const uint8_t *y, int n, int bins) {
    if (n <= 0 || bins < 1) return NAN;
    double e = 0;
    for (int k = 0; k < bins; k++) {
        double lo = (double)k / bins, hi = (double)(k + 1) / bins, sp = 0, sy = 0;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (p[i] >= lo && (k < bins - 1 ? p[i] < hi : p[i] <= hi)) {
                sp += p[i];
                sy += y[i] != 0;
                m++;
            }
        if (m) e += (double)m / n * fabs(sp / m - sy / m);
    }
    return e;
}

/* ---------------------------------------------------- operating point */

static int cmp_float_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y ? 1 : 0;
}

static int cmp_float_asc(const void *a, const void *b) { return -cmp_float_desc(a, b); }

/* the k-th (1-based) of v[0..m), k clamped to 1..m */
static double kth(const float *v, int m, double k) {
    int i = (int)k - 1;
    return v[i < 0 ? 0 : i >= m ? m - 1 : i];
}

int valstats_operating_point(const float *p, const uint8_t *y, int n, double target, valstats_point *out) {
    int npos = 0, nneg = 0;
    for (int i = 0; i < n; i++) npos += y[i] != 0;
    nneg = n - npos;
    if (npos == 0) return -1;
    float *pos = malloc((size_t)npos * sizeof *pos), *neg = malloc((size_t)(nneg ? nneg : 1) * sizeof *neg);
    if (!pos || !neg) {
        free(pos);
        free(neg);
        return -1;
    }
    for (int i = 0, a = 0, b = 0; i < n; i++) {
        if (y[i]) pos[a++] = p[i];
        else neg[b++] = p[i];
    }
    qsort(pos, (size_t)npos, sizeof *pos, cmp_float_desc);
    qsort(neg, (size_t)nneg, sizeof *neg, cmp_float_asc);
    double band_sens = target > VALSTATS_BAND_SENS ? target : VALSTATS_BAND_SENS;
    out->threshold = kth(pos, npos, ceil(target * npos));
    out->low = fmin(out->threshold, kth(pos, npos, ceil(band_sens * npos)));
    out->high = nneg ? fmax(out->threshold, kth(neg, nneg, ceil(VALSTATS_BAND_SPEC * nneg))) : out->threshold;
    valstats_sens_spec(p, y, n, out->threshold, &out->sensitivity, &out->specificity);
    free(pos);
    free(neg);
    return 0;
}

void valstats_sens_spec(const float *p, const uint8_t *y, int n, double threshold, double *sens, double *spec) {
    int tp = 0, np = 0, tn = 0, nn = 0;
    for (int i = 0; i < n; i++) {
        if (y[i]) {
            np++;
            tp += p[i] >= threshold;
        } else {
            nn++;
            tn += p[i] < threshold;
        }
    }
    *sens = np ? (double)tp / np : NAN;
    *spec = nn ? (double)tn / nn : NAN;
}

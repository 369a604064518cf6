/*
 * jls_compare — frame 1 of each JPEG-LS DICOM file decoded by our decoder
 * (dicom/jls.c) and by DCMTK, compared sample by sample. Driven by
 * test_jls.py; usable by hand:
 *
 *   jls_compare FILE...      one line per file; exit 1 if any differ or fail
 *
 * A file our decoder declines (several components, mapping tables, ...)
 * prints "declined" and counts as a pass only with --allow-declined.
 */
#include "cxr_dicom.h"
#include "dcmtk_shim.h"
#include "jls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int one(const char *path, int allow_declined) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        printf("FAIL %s: cannot open\n", path);
        return 1;
    }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n);
    if (!buf || fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        printf("FAIL %s: cannot read\n", path);
        fclose(fp);
        free(buf);
        return 1;
    }
    fclose(fp);
    char err[512] = "";
    cxr_meta m;
    shim_info in;
    shim_ds *ds = NULL;
    memset(&m, 0, sizeof m);
    int bad = 1;
    shim_frame ours, ref;
    memset(&ours, 0, sizeof ours);
    memset(&ref, 0, sizeof ref);
    jls_image im = {0};
    if (shim_open(buf, (size_t)n, &ds, &m, &in, err, sizeof err) != CXR_OK) {
        printf("FAIL %s: %s\n", path, err);
        goto out;
    }
    shim_decode_opts o = {10000, 0, 0, 1};
    if (shim_first_frame(ds, &m, &o, &ours, err, sizeof err) != CXR_OK || !ours.codestream_jls) {
        printf("%s %s: not extracted as a JPEG-LS code stream (%s)\n", allow_declined ? "declined" : "FAIL", path,
               err);
        bad = !allow_declined;
        goto out;
    }
    double t0 = now_ms();
    int rc = jls_decode(ours.codestream, ours.codestream_len, m.cols, m.rows, 0, 0, &im, err, sizeof err);
    double t_ours = now_ms() - t0;
    if (rc == CXR_ERR_TRANSFER_SYNTAX && allow_declined) {
        printf("declined %s: %s\n", path, err);
        bad = 0;
        goto out;
    }
    if (rc != CXR_OK) {
        printf("FAIL %s: our decoder: %s\n", path, err);
        goto out;
    }
    o.jls_codestream = 0;
    t0 = now_ms();
    if (shim_first_frame(ds, &m, &o, &ref, err, sizeof err) != CXR_OK) {
        printf("FAIL %s: DCMTK: %s\n", path, err);
        goto out;
    }
    double t_dcmtk = now_ms() - t0;
    if (im.width != m.cols || im.height != m.rows) {
        printf("FAIL %s: ours %dx%d, header %dx%d\n", path, im.width, im.height, m.cols, m.rows);
        goto out;
    }
    size_t npx = (size_t)m.rows * m.cols, diffs = 0, first = 0;
    for (size_t i = 0; i < npx; i++) {
        unsigned r = m.bits_allocated == 8 ? ((const uint8_t *)ref.data)[i] : ((const uint16_t *)ref.data)[i];
        if (r != im.data[i] && !diffs++) first = i;
    }
    if (diffs) {
        printf("FAIL %s: %zu of %zu samples differ, first at row %zu col %zu\n", path, diffs, npx, first / m.cols,
               first % m.cols);
        goto out;
    }
    printf("ok %s: %dx%d, %d bits, NEAR %d: identical; ours %.1f ms, DCMTK %.1f ms\n", path, im.width, im.height,
           im.bits, im.near, t_ours, t_dcmtk);
    bad = 0;
out:
    jls_image_free(&im);
    shim_frame_free(&ours);
    shim_frame_free(&ref);
    if (ds) shim_close(ds);
    free(buf);
    return bad;
}

int main(int argc, char **argv) {
    int allow = 0, bad = 0, files = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--allow-declined")) {
            allow = 1;
            continue;
        }
        bad += one(argv[i], allow);
        files++;
    }
    printf("%d file(s), %d failed\n", files, bad);
    return bad ? 1 : 0;
}

/*
 * evidence.h — where a finding's evidence lies (internal to libcxrvqa): the
 * geometry from the model's evidence grid back to the image, the share of
 * evidence on the patient's left, and the heatmap overlay as PNG bytes.
 * Pure C on plain arrays; knows no model and no DICOM.
 */
#ifndef CXR_EVIDENCE_H
#define CXR_EVIDENCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int rows, cols;         /* the image plane */
    int size;               /* model input side */
    int grid;               /* evidence cells per side */
    double oy, ox, rh, rw;  /* where the resized image sits in the model input */
} evidence_geometry;

/* policy: 0 pad, 1 crop, 2 stretch (cxr_resize_policy). */
void evidence_geometry_init(evidence_geometry *g, int rows, int cols, int size, int policy, int grid);

/* Evidence at image pixel (y, x): bilinear in the cell grid. */
float evidence_at(const float *cells, const evidence_geometry *g, double y, double x);

/* Share of the positive evidence (above the map's mean over the image) that
 * lies on the patient's left, i.e. the image's right half on a frontal
 * PA/AP view. NaN when the map is flat. *concentration (when not NULL): the
 * share of that positive evidence held by the strongest tenth of the image
 * (0.1 for evidence spread evenly, near 1 for one compact region; NaN when
 * flat): a side is only worth reporting for concentrated evidence. */
float evidence_left_share(const float *cells, const evidence_geometry *g, float *concentration);
#define EVIDENCE_MIN_CONCENTRATION 0.35f /* below: "not localised" */

/* The 8-bit image (rows × cols) scaled so its longest side is at most
 * max_side, with the positive evidence blended over it in a blue→red
 * colour ramp, and along its bottom a legend: label (the finding's name,
 * ASCII; others shown as '?') and the colour scale from the map's mean to
 * its maximum. An RGB PNG in memory (*png malloc'd; caller frees). */
int evidence_overlay_png(const uint8_t *px, const evidence_geometry *g, const float *cells, int max_side,
                         const char *label, uint8_t **png, size_t *png_len, char *err, size_t errlen);

#endif

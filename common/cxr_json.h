/*
 * cxr_json.h — typed getters over cJSON objects, written once: a missing key
 * or a value of another type reads as the fallback. And the one way a float
 * that may be NaN or infinite goes into JSON (as null).
 *
 *   const char *q = cxr_json_str(req, "question");      // NULL when absent
 *   int sr = cxr_json_bool(req, "sr");                  // 0 when absent
 *   cxr_json_add_num(obj, "probability", p);            // null when NaN
 */
#ifndef CXR_JSON_H
#define CXR_JSON_H

#include <cjson/cJSON.h>

#ifdef __cplusplus
extern "C" {
#endif

const char *cxr_json_str(const cJSON *o, const char *key);    /* NULL unless a string */
int cxr_json_bool(const cJSON *o, const char *key);           /* 1 only for true */
double cxr_json_num(const cJSON *o, const char *key, double fallback);
/* Add key: v, or null when v is NaN or infinite. */
void cxr_json_add_num(cJSON *o, const char *key, double v);

#ifdef __cplusplus
}
#endif
#endif /* CXR_JSON_H */

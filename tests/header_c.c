/* Compiles the public header alone, as C. */
#include "cxr_dicom.h"
int header_c_dummy(void) { return CXR_OK; }

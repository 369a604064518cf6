/* Compiles the public header alone, as C++. */
#include "cxr_dicom.h"
int header_cxx_dummy() { return CXR_OK; }

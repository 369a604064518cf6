/* Compiles the engine's public header alone, as C. */
#include "cxr_model.h"
int header_model_c_dummy(void) { return CXR_OK; }

/* Compiles the engine's public header alone, as C++. */
#include "cxr_model.h"
int header_model_cxx_dummy() { return CXR_OK; }

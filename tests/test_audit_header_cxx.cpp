/* Compiles the audit header alone, as C++. */
#include "audit.h"
int test_audit_header_cxx_dummy() { return CXR_OK; }

/* Compiles the audit header alone, as C. */
#include "audit.h"
int test_audit_header_c_dummy(void) { return CXR_OK; }

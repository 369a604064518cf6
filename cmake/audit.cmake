# cxraudit: the SQLite audit store (plugin/audit.c) and `cxrvqa audit`
# (plugin/audit_cli.c), with its tests. Included from the top-level
# CMakeLists.txt after SQLITE3, CRYPTO and CJSON are found.
add_library(cxraudit STATIC plugin/audit.c plugin/audit_cli.c)
target_include_directories(cxraudit PUBLIC ${CMAKE_SOURCE_DIR}/plugin)
target_link_libraries(cxraudit PUBLIC cxrcommon PRIVATE PkgConfig::SQLITE3 PkgConfig::CRYPTO PkgConfig::CJSON)

# the public header compiles alone, as C and as C++
add_library(test_audit_header OBJECT tests/test_audit_header_c.c tests/test_audit_header_cxx.cpp)
target_include_directories(test_audit_header PRIVATE ${CMAKE_SOURCE_DIR}/plugin ${CMAKE_SOURCE_DIR}/common)

# unit tests: chain round trip, each kind of tampering, schema, modes, pseudonyms,
# hostile strings, fail-closed (page limit, query_only, RLIMIT_FSIZE, lock timeout)
add_executable(test_audit tests/test_audit.c)
target_link_libraries(test_audit PRIVATE cxraudit PkgConfig::SQLITE3 PkgConfig::CJSON)
add_test(NAME audit_unit COMMAND test_audit)
set_tests_properties(audit_unit PROPERTIES TIMEOUT 60)

# the writer the process tests drive (crash/resume, concurrency, throughput, CLI)
add_executable(audit_stress tests/audit_stress.c)
target_link_libraries(audit_stress PRIVATE cxraudit)

set(_audit_py /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/test_audit_proc.py --stress $<TARGET_FILE:audit_stress>)
foreach(_t crash concurrency throughput cli mounts fuse)
  add_test(NAME audit_${_t} COMMAND ${_audit_py} ${_t})
  set_tests_properties(audit_${_t} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
endforeach()

# cxrsr: the DICOM SR writer / reader / HTML renderer (dicom/sr_writer.cpp,
# public header dicom/cxr_sr.h) and its tests. Included from the top-level
# CMakeLists.txt; defines nothing else.

add_library(cxrsr STATIC dicom/sr_writer.cpp)
target_include_directories(cxrsr PUBLIC ${CMAKE_SOURCE_DIR}/dicom ${CMAKE_SOURCE_DIR}/common)
target_link_libraries(cxrsr PUBLIC cxrcommon PRIVATE DCMTK::cmr DCMTK::dcmsr DCMTK::dcmdata)
# DCMTK's headers are not -Wextra clean; treat them as system headers.
get_target_property(_sr_dcmtk_inc DCMTK::dcmdata INTERFACE_INCLUDE_DIRECTORIES)
if(_sr_dcmtk_inc)
  target_include_directories(cxrsr SYSTEM PRIVATE ${_sr_dcmtk_inc})
endif()

# The public header compiles alone, as C and as C++.
file(WRITE ${CMAKE_BINARY_DIR}/sr_header/sr_header_c.c "#include \"cxr_sr.h\"\nint sr_header_c;\n")
file(WRITE ${CMAKE_BINARY_DIR}/sr_header/sr_header_cxx.cpp "#include \"cxr_sr.h\"\nint sr_header_cxx;\n")
add_library(sr_header_check OBJECT ${CMAKE_BINARY_DIR}/sr_header/sr_header_c.c ${CMAKE_BINARY_DIR}/sr_header/sr_header_cxx.cpp)
target_include_directories(sr_header_check PRIVATE ${CMAKE_SOURCE_DIR}/dicom ${CMAKE_SOURCE_DIR}/common)

# C test: request checks, refusals (PNG, garbage, missing file), round trips,
# HTML. It also writes the SRs that sr_validate then checks with dciodvfy,
# dsrdump, dsr2html and pydicom.
find_package(Threads REQUIRED)
add_executable(test_sr tests/test_sr.c)
target_link_libraries(test_sr PRIVATE cxrsr Threads::Threads)
add_test(NAME sr_unit COMMAND test_sr ${CMAKE_SOURCE_DIR}/sample_data ${CMAKE_CURRENT_BINARY_DIR}/sr_unit_out)
add_test(NAME sr_validate COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/test_sr.py
  --test-sr $<TARGET_FILE:test_sr> --sample-data ${CMAKE_SOURCE_DIR}/sample_data
  --shared-data ${CMAKE_SOURCE_DIR}/../shared/data --work ${CMAKE_CURRENT_BINARY_DIR}/sr_validate_out)
set_tests_properties(sr_validate PROPERTIES SKIP_RETURN_CODE 77)

# cmake/orthanc.cmake — the Orthanc plugin (libcxrvqa_orthanc.so, target
# cxrvqa_orthanc) and its tests. Needs orthanc-dev (OrthancCPlugin.h); skipped
# with a message when it is absent.
#
# This file is also a script: `cmake -DIN=x.js -DOUT=x.h -P cmake/orthanc.cmake`
# writes IN as a NUL-terminated C array (OP_EXPLORER_JS) into OUT. The build
# runs it whenever plugin/explorer.js changes.
if(CMAKE_SCRIPT_MODE_FILE)
  file(READ "${IN}" _hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," _hex "${_hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" _hex "${_hex}")
  file(WRITE "${OUT}.tmp" "/* generated from plugin/explorer.js by cmake/orthanc.cmake: do not edit */\n"
       "static const unsigned char OP_EXPLORER_JS[] = {\n${_hex}0x00};\n")
  file(RENAME "${OUT}.tmp" "${OUT}")
  return()
endif()

find_path(ORTHANC_INCLUDE_DIR orthanc/OrthancCPlugin.h PATHS /usr/include /usr/local/include)
if(NOT ORTHANC_INCLUDE_DIR)
  message(STATUS "orthanc-dev not found (orthanc/OrthancCPlugin.h): the Orthanc plugin is not built")
  return()
endif()
find_package(Threads REQUIRED)

set(_op_gen ${CMAKE_BINARY_DIR}/generated/orthanc)
add_custom_command(
  OUTPUT ${_op_gen}/orthanc_explorer_js.h
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_op_gen}
  COMMAND ${CMAKE_COMMAND} -DIN=${CMAKE_SOURCE_DIR}/plugin/explorer.js -DOUT=${_op_gen}/orthanc_explorer_js.h
          -P ${CMAKE_CURRENT_LIST_FILE}
  DEPENDS ${CMAKE_SOURCE_DIR}/plugin/explorer.js ${CMAKE_CURRENT_LIST_FILE}
  COMMENT "Embedding plugin/explorer.js"
  VERBATIM)

add_library(cxrvqa_orthanc MODULE
  plugin/orthanc_plugin.c
  plugin/orthanc_screen.c
  plugin/orthanc_queue.c
  plugin/orthanc_request.c
  ${_op_gen}/orthanc_explorer_js.h)
set_target_properties(cxrvqa_orthanc PROPERTIES
  PREFIX "lib" OUTPUT_NAME cxrvqa_orthanc
  C_VISIBILITY_PRESET hidden
  LINK_DEPENDS ${CMAKE_SOURCE_DIR}/plugin/orthanc_plugin.map)
target_include_directories(cxrvqa_orthanc PRIVATE ${_op_gen} ${CMAKE_SOURCE_DIR}/plugin)
target_include_directories(cxrvqa_orthanc SYSTEM PRIVATE ${ORTHANC_INCLUDE_DIR})
target_compile_definitions(cxrvqa_orthanc PRIVATE
  CXRVQA_EXE="$<TARGET_FILE:cxrvqa>"
  CXRVQA_DEFAULT_MODEL="${CMAKE_SOURCE_DIR}/model/cxrvqa-cxr-cnn.gguf")
# export the four entry points only; no undefined symbols left for Orthanc
target_link_options(cxrvqa_orthanc PRIVATE
  -Wl,--version-script=${CMAKE_SOURCE_DIR}/plugin/orthanc_plugin.map -Wl,--no-undefined)
# the static libraries linked into this shared object must be PIC
foreach(_lib cxrworker cxraudit cxrcommon)
  if(TARGET ${_lib})
    set_property(TARGET ${_lib} PROPERTY POSITION_INDEPENDENT_CODE ON)
    target_link_libraries(cxrvqa_orthanc PRIVATE ${_lib})
  endif()
endforeach()
target_link_libraries(cxrvqa_orthanc PRIVATE PkgConfig::CJSON PkgConfig::SQLITE3 PkgConfig::CRYPTO Threads::Threads)
# the workers the plugin starts are this build's cxrvqa
add_dependencies(cxrvqa_orthanc cxrvqa)

# ---- tests
# the persisted queue, without Orthanc
add_executable(test_orthanc_queue tests/orthanc_test_queue.c plugin/orthanc_queue.c)
target_include_directories(test_orthanc_queue PRIVATE ${CMAKE_SOURCE_DIR}/plugin)
target_include_directories(test_orthanc_queue SYSTEM PRIVATE ${ORTHANC_INCLUDE_DIR})
target_link_libraries(test_orthanc_queue PRIVATE cxrcommon PkgConfig::CJSON PkgConfig::SQLITE3 Threads::Threads)
add_test(NAME orthanc_queue COMMAND test_orthanc_queue)

# A real Orthanc (/usr/sbin/Orthanc) with the plugin and real `cxrvqa worker`
# processes. Exit 77 (skipped) only when Orthanc is not installed. Not run in
# the sanitizer build: Orthanc itself is not instrumented, so the plugin would
# need libasan preloaded into it (see tests/test_orthanc.py --help).
if(NOT CXR_SANITIZE)
  set(_op_py /usr/bin/python3)
  add_test(NAME orthanc_plugin COMMAND ${_op_py} ${CMAKE_SOURCE_DIR}/tests/test_orthanc.py
    --plugin $<TARGET_FILE:cxrvqa_orthanc> --cxrvqa $<TARGET_FILE:cxrvqa>
    --sample-data ${CMAKE_SOURCE_DIR}/sample_data)
  set_tests_properties(orthanc_plugin PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 400 RUN_SERIAL TRUE)
  add_test(NAME orthanc_browser COMMAND ${_op_py} ${CMAKE_SOURCE_DIR}/tests/test_orthanc_browser.py
    --plugin $<TARGET_FILE:cxrvqa_orthanc> --cxrvqa $<TARGET_FILE:cxrvqa>
    --sample-data ${CMAKE_SOURCE_DIR}/sample_data)
  set_tests_properties(orthanc_browser PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 200 RUN_SERIAL TRUE)
endif()

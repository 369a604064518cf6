# cmake/hardening.cmake — the hardening suite: hostile and malformed inputs
# through the CLI (tests/malformed/generate.py + tests/test_malformed.py),
# leaks and memory growth of libcxrvqa (tests/test_leak.c), the question
# parser's fuzz target (tests/fuzz/fuzz_question.c) and the replay of every
# fuzz regression input (tests/fuzz/regressions/<target>/). Included last
# from the top-level CMakeLists.txt (it refers to targets defined before it:
# cxrvqa, cxrvqa_core, cxrquestion, the *_replay executables). Bounded fuzzing
# runs are tests/fuzz/ci_fuzz.sh's job, not ctest's.

set(_hd_py /usr/bin/python3)
set(_hd_fuzz ${CMAKE_SOURCE_DIR}/tests/fuzz)

# ---- malformed and hostile inputs: `cxrvqa ask` per file and one `cxrvqa
# screen` over all of them; exact error / refusal, audit row, no SR, nothing
# written elsewhere, < 1 s and < 256 MB each (10 s / 1 GB under the sanitizers)
if(CXR_SANITIZE)
  set(_hd_malformed_args --sanitized)
endif()
add_test(NAME malformed COMMAND ${_hd_py} ${CMAKE_SOURCE_DIR}/tests/test_malformed.py
  --cxrvqa $<TARGET_FILE:cxrvqa> ${_hd_malformed_args})
set_tests_properties(malformed PROPERTIES TIMEOUT 900)

# ---- the decode deadline end to end (1 ms): decode-timeout, its audit row,
# and a worker that exits after answering, replaced before the next request
add_test(NAME malformed_decode_deadline COMMAND ${_hd_py} ${CMAKE_SOURCE_DIR}/tests/test_decode_deadline.py
  --cxrvqa $<TARGET_FILE:cxrvqa>)
set_tests_properties(malformed_decode_deadline PROPERTIES TIMEOUT 300)

# ---- leaks and growth: 10,000 in-process requests in the release build
# (RSS after 500 vs after 10,000, growth <= 5%), 1,000 in the sanitizer
# build (LeakSanitizer at exit; about 50 ms a request there). The
# sanitizer build's 10,000-request run: `ctest -C soak -R leak_soak`.
add_executable(test_leak tests/test_leak.c)
target_link_libraries(test_leak PRIVATE cxrvqa_core)
set(_hd_leak_args
  --model ${CMAKE_SOURCE_DIR}/model/cxrvqa-cxr-cnn.gguf
  --file ${CMAKE_SOURCE_DIR}/sample_data/cr_mono1_jpegls.dcm
  --file ${CMAKE_SOURCE_DIR}/sample_data/dx_mono2_rle.dcm
  --file ${CMAKE_SOURCE_DIR}/sample_data/png_gray8.png
  --refused ${_hd_fuzz}/corpus/cr12_mono2_explicit.dcm
  --malformed ${_hd_fuzz}/corpus/bad_truncated_pixels.dcm)
if(CXR_SANITIZE)
  set(_hd_leak_requests 1000)
else()
  set(_hd_leak_requests 10000)
endif()
add_test(NAME leak COMMAND test_leak ${_hd_leak_args} --requests ${_hd_leak_requests})
set_tests_properties(leak PROPERTIES TIMEOUT 1200)
add_test(NAME leak_soak CONFIGURATIONS soak COMMAND test_leak ${_hd_leak_args} --requests 10000)
set_tests_properties(leak_soak PROPERTIES TIMEOUT 3600)

# ---- question parser fuzz target: seeds are the questions of
# tests/data/questions.tsv, one file each, written at build time
set(_hd_qseeds ${CMAKE_BINARY_DIR}/fuzz_question_seeds)
add_custom_command(OUTPUT ${_hd_qseeds}/.stamp
  COMMAND ${CMAKE_COMMAND} -E rm -rf ${_hd_qseeds}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_hd_qseeds}
  COMMAND awk -F "\t" -v dir=${_hd_qseeds}
    "!/^#/ && NF { f = sprintf(\"%s/q%04d\", dir, NR); printf \"%s\", $1 > f; close(f) }"
    ${CMAKE_SOURCE_DIR}/tests/data/questions.tsv
  COMMAND ${CMAKE_COMMAND} -E touch ${_hd_qseeds}/.stamp
  DEPENDS ${CMAKE_SOURCE_DIR}/tests/data/questions.tsv
  COMMENT "fuzz_question seeds from tests/data/questions.tsv"
  VERBATIM)
add_custom_target(fuzz_question_seeds ALL DEPENDS ${_hd_qseeds}/.stamp)
add_executable(fuzz_question_replay tests/fuzz/fuzz_question.c tests/fuzz/replay_main.c)
target_link_libraries(fuzz_question_replay PRIVATE cxrquestion)
add_dependencies(fuzz_question_replay fuzz_question_seeds)
add_test(NAME fuzz_question_replay COMMAND fuzz_question_replay ${_hd_qseeds} ${_hd_fuzz}/regressions/fuzz_question)
if(CXR_FUZZ)
  if(CMAKE_C_COMPILER_ID MATCHES "Clang")
    add_executable(fuzz_question tests/fuzz/fuzz_question.c)
    target_compile_options(fuzz_question PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_question PRIVATE -fsanitize=fuzzer)
    target_link_libraries(fuzz_question PRIVATE cxrquestion)
    add_dependencies(fuzz_question fuzz_question_seeds)
  else()
    message(WARNING "CXR_FUZZ: fuzz_question needs clang (libFuzzer); not built with ${CMAKE_C_COMPILER_ID}")
  endif()
endif()

# ---- the Orthanc plugin's request parsing (plugin/orthanc_request.c): ask
# bodies and Basic auth headers; seeds in tests/fuzz/corpus_plugin
add_executable(fuzz_plugin_request_replay tests/fuzz/fuzz_plugin_request.c plugin/orthanc_request.c
  tests/fuzz/replay_main.c)
target_include_directories(fuzz_plugin_request_replay PRIVATE ${CMAKE_SOURCE_DIR}/plugin)
target_link_libraries(fuzz_plugin_request_replay PRIVATE PkgConfig::CJSON)
add_test(NAME fuzz_plugin_request_replay COMMAND fuzz_plugin_request_replay ${_hd_fuzz}/corpus_plugin
  ${_hd_fuzz}/regressions/fuzz_plugin_request)
if(CXR_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
  add_executable(fuzz_plugin_request tests/fuzz/fuzz_plugin_request.c plugin/orthanc_request.c)
  target_include_directories(fuzz_plugin_request PRIVATE ${CMAKE_SOURCE_DIR}/plugin)
  target_compile_options(fuzz_plugin_request PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_plugin_request PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_plugin_request PRIVATE PkgConfig::CJSON)
endif()

# ---- every crash the fuzzers ever found, replayed (tests/fuzz/regressions/<target>/)
foreach(_t ingest gguf frame)
  if(TARGET fuzz_${_t}_replay)
    add_test(NAME fuzz_${_t}_regressions COMMAND fuzz_${_t}_replay ${_hd_fuzz}/regressions/fuzz_${_t})
    # the fuzz targets decode without a deadline: a hang must fail the test, not block it
    set_tests_properties(fuzz_${_t}_regressions PROPERTIES TIMEOUT 300)
  endif()
endforeach()

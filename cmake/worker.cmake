# cmake/worker.cmake — cxrworker: the framed worker channel and the supervised
# worker pool (plugin/worker.c, contract in plugin/worker.h), its test worker
# executable and unit test, and the frame decoder's fuzz target (libFuzzer
# build with CXR_FUZZ=ON and clang; replayed over its seed corpus always).
find_package(Threads REQUIRED)

add_library(cxrworker STATIC plugin/worker.c)
target_include_directories(cxrworker PUBLIC ${CMAKE_SOURCE_DIR}/plugin)
target_link_libraries(cxrworker PUBLIC cxrcommon Threads::Threads PRIVATE PkgConfig::CJSON)

# a real worker executable for the pool tests (echo, crash, hang, alloc, …)
add_executable(worker_testd tests/worker_testd.c)
target_link_libraries(worker_testd PRIVATE cxrworker PkgConfig::CJSON)

add_executable(test_worker tests/test_worker.c)
target_link_libraries(test_worker PRIVATE cxrworker PkgConfig::CJSON Threads::Threads)
add_test(NAME worker COMMAND test_worker $<TARGET_FILE:worker_testd>)
set_tests_properties(worker PROPERTIES TIMEOUT 120)

# fuzz target replayed over its seed corpus (libFuzzer build: CXR_FUZZ)
add_executable(fuzz_frame_replay tests/fuzz/fuzz_frame.c tests/fuzz/replay_main.c)
target_link_libraries(fuzz_frame_replay PRIVATE cxrworker)
add_test(NAME fuzz_frame_replay COMMAND fuzz_frame_replay ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus_frame)
if(CXR_FUZZ)
  if(CMAKE_C_COMPILER_ID MATCHES "Clang")
    add_executable(fuzz_frame tests/fuzz/fuzz_frame.c)
    target_compile_options(fuzz_frame PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_frame PRIVATE -fsanitize=fuzzer)
    target_link_libraries(fuzz_frame PRIVATE cxrworker)
  else()
    message(WARNING "CXR_FUZZ: fuzz_frame needs clang (libFuzzer); not built with ${CMAKE_C_COMPILER_ID}")
  endif()
endif()

# libcxrvqa: ask = question understanding + ingestion + model + answer policy.
# Static for the CLI and tests; shared libcxrvqa.so for viewer integrations.
set(CXRVQA_CORE_SRC plugin/ask.c plugin/evidence.c plugin/answer_json.c plugin/answer_sr.c)
add_library(cxrvqa_core STATIC ${CXRVQA_CORE_SRC})
target_include_directories(cxrvqa_core PUBLIC ${CMAKE_SOURCE_DIR}/plugin)
target_link_libraries(cxrvqa_core PUBLIC cxrdicom cxrmodel cxrquestion PkgConfig::CJSON PkgConfig::CRYPTO PkgConfig::PNG m)
if(TARGET cxrsr)
  target_link_libraries(cxrvqa_core PUBLIC cxrsr)
endif()

# golden end-to-end: cxrvqa ask on the generated sample studies
add_test(NAME ask_golden COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/test_ask.py $<TARGET_FILE:cxrvqa>)
set_tests_properties(ask_golden PROPERTIES TIMEOUT 300)

# libcxrvqa.so: the same core as one shared library for viewer integrations;
# only the cxr_vqa_* / cxr_answer_* API is exported (plugin/libcxrvqa.map).
add_library(cxrvqa_shared SHARED ${CXRVQA_CORE_SRC})
set_target_properties(cxrvqa_shared PROPERTIES OUTPUT_NAME cxrvqa VERSION ${PROJECT_VERSION} SOVERSION 0
  LINK_DEPENDS ${CMAKE_SOURCE_DIR}/plugin/libcxrvqa.map)
target_include_directories(cxrvqa_shared PUBLIC ${CMAKE_SOURCE_DIR}/plugin)
target_link_libraries(cxrvqa_shared PRIVATE cxrdicom cxrmodel cxrquestion PkgConfig::CJSON PkgConfig::CRYPTO PkgConfig::PNG m)
if(TARGET cxrsr)
  target_link_libraries(cxrvqa_shared PRIVATE cxrsr)
endif()
target_link_options(cxrvqa_shared PRIVATE -Wl,--version-script=${CMAKE_SOURCE_DIR}/plugin/libcxrvqa.map -Wl,--no-undefined)

# the README's example program, linked against the shared library
add_executable(example_ask tests/example_ask.c)
target_link_libraries(example_ask PRIVATE cxrvqa_shared)
target_include_directories(example_ask PRIVATE ${CMAKE_SOURCE_DIR}/common ${CMAKE_SOURCE_DIR}/dicom)
add_test(NAME libcxrvqa_example COMMAND example_ask ${CMAKE_SOURCE_DIR}/model/cxrvqa-cxr-cnn.gguf
  ${CMAKE_SOURCE_DIR}/sample_data/dx_mono2_rle.dcm "Is there a pleural effusion?")

# batch screening: throughput jobs 1 vs 2, a broken file, SIGKILL + resume exactly once
add_test(NAME screen COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/test_screen.py $<TARGET_FILE:cxrvqa>)
set_tests_properties(screen PROPERTIES TIMEOUT 900)

# cxrquestion: question understanding in English and simplified Chinese
# (plugin/question.c, the finding lexicon plugin/lexicon.c, public header
# plugin/question.h) and its test. Included from the top-level CMakeLists.txt;
# defines nothing else.

add_library(cxrquestion STATIC plugin/question.c plugin/lexicon.c)
target_include_directories(cxrquestion PUBLIC ${CMAKE_SOURCE_DIR}/plugin)
target_link_libraries(cxrquestion PUBLIC cxrcommon)
# linked into the shared libcxrvqa as well
set_target_properties(cxrquestion PROPERTIES POSITION_INDEPENDENT_CODE ON)

# The public header compiles alone, as C and as C++.
file(WRITE ${CMAKE_BINARY_DIR}/question_header/question_header_c.c "#include \"question.h\"\nint question_header_c;\n")
file(WRITE ${CMAKE_BINARY_DIR}/question_header/question_header_cxx.cpp "#include \"question.h\"\nint question_header_cxx;\n")
add_library(question_header_check OBJECT ${CMAKE_BINARY_DIR}/question_header/question_header_c.c
  ${CMAKE_BINARY_DIR}/question_header/question_header_cxx.cpp)
target_include_directories(question_header_check PRIVATE ${CMAKE_SOURCE_DIR}/plugin)

# The phrasing suite (>= 320 questions, en + zh) plus unit checks; fails below 97%.
add_executable(test_question tests/test_question.c)
target_include_directories(test_question PRIVATE ${CMAKE_SOURCE_DIR}/tests)
target_link_libraries(test_question PRIVATE cxrquestion)
add_test(NAME question COMMAND test_question ${CMAKE_SOURCE_DIR}/tests/data/questions.tsv)

cmake_minimum_required(VERSION 3.18)
# man.cmake: cmake -DEXE=cxrvqa -DOUT=cxrvqa.1 -DVERSION=x.y.z -P man.cmake
# cxrvqa(1) from the binary's own help: the top-level usage, then
# `cxrvqa CMD --help` for every command that usage lists (`model info`,
# `audit` as their usage names them). Fails when a command's --help fails.
execute_process(COMMAND ${EXE} --help OUTPUT_VARIABLE top RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${EXE} --help failed (${rc})")
endif()
# the commands: two-space-indented words of the "commands:" block
string(REGEX MATCHALL "\n  [a-z]+( info)?" cmds "${top}")
set(seen "")
set(body "")
foreach(c ${cmds})
  string(STRIP "${c}" c)
  if(c IN_LIST seen)
    continue()
  endif()
  list(APPEND seen "${c}")
  separate_arguments(argv UNIX_COMMAND "${c} --help")
  execute_process(COMMAND ${EXE} ${argv} OUTPUT_VARIABLE h ERROR_VARIABLE e RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "`cxrvqa ${c} --help` failed (${rc}): ${e}")
  endif()
  if(h STREQUAL top)
    continue()  # the command prints the top-level usage: already above
  endif()
  string(REPLACE "\\" "\\e" h "${h}")
  string(REGEX REPLACE "\n\\." "\n\\\\&." h "${h}")
  string(APPEND body ".SS cxrvqa ${c}\n.nf\n${h}.fi\n")
endforeach()
string(REPLACE "\\" "\\e" top "${top}")
string(REGEX REPLACE "\n\\." "\n\\\\&." top "${top}")
file(WRITE ${OUT} ".TH CXRVQA 1 \"\" \"cxrvqa ${VERSION}\" \"User Commands\"
.SH NAME
cxrvqa \\- chest X-ray question answering (research use only)
.SH SYNOPSIS
.B cxrvqa
.I command
[options]
.SH DESCRIPTION
.nf
${top}.fi
.SH COMMANDS
${body}.SH FILES
.TP
.I PREFIX/share/cxrvqa/models/cxrvqa-cxr-cnn.gguf
the default model (MODEL_CARD.md beside it); \\fB$CXRVQA_MODEL\\fR overrides it
.TP
.I PREFIX/share/orthanc/plugins/libcxrvqa_orthanc.so
the Orthanc plugin (its configuration: PREFIX/share/doc/cxrvqa/examples/orthanc.json)
.SH SEE ALSO
README.md (\"Deploying at a site\") and SECURITY.md in PREFIX/share/doc/cxrvqa
")

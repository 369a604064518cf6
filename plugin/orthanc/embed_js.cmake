# embed_js.cmake — a CMake script (cmake -DIN=x.js -DOUT=x.h -P embed_js.cmake):
# writes IN as a NUL-terminated C array (OP_EXPLORER_JS) into OUT. The build
# runs it whenever explorer.js changes (plugin/orthanc/CMakeLists.txt).
file(READ "${IN}" _hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," _hex "${_hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" _hex "${_hex}")
file(WRITE "${OUT}.tmp" "/* generated from plugin/orthanc/explorer.js by plugin/orthanc/embed_js.cmake: do not edit */\n"
     "static const unsigned char OP_EXPLORER_JS[] = {\n${_hex}0x00};\n")
file(RENAME "${OUT}.tmp" "${OUT}")

#  Turn a text file into a C string: cmake -DIN=file -DOUT=file.c -P embed_text.cmake
file (READ ${IN} text HEX)
string (REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${text}")
file (WRITE ${OUT} "//  GENERATED from ${IN} - edit that file\nconst char kvt_default_cfg [] = {${bytes} 0x00};\n")

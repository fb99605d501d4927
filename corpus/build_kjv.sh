#!/usr/bin/env bash
# Rebuilds kjv.txt from Debian's bible-kjv package (apt-get install bible-kjv).
# Output: one verse per line, one chapter per document, documents separated by a blank line.
set -euo pipefail
bible -l100000 "Gen1:1-Rev22:21" | awk '
  /^[A-Z0-9][A-Za-z0-9 ]* [0-9]+$/ { if (started) print ""; started = 1; next }   # "Genesis 1": new chapter
  /^[ ]+[0-9]+ / { sub(/^[ ]+[0-9]+ /, ""); print; next }                      # "  3 And God said..."
  /^$/ { next }
  { print }
' > "${1:-kjv.txt}"

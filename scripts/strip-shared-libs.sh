#!/usr/bin/env bash
# Strip the debug symbols of the shared libraries under DIR (the image's venv), keeping a library
# unstripped when it no longer loads afterwards: binutils' strip corrupts some libraries that
# auditwheel patched with patchelf (numpy's and scipy's OpenBLAS: "ELF load command address/offset
# not page-aligned"), so every stripped file is dlopen()ed once and restored if that fails.
# Used by the Dockerfile's builder stage (~100 MB less); does nothing without `strip`.
set -euo pipefail
DIR="${1:?usage: strip-shared-libs.sh DIR}"
command -v strip >/dev/null || { echo "strip-shared-libs: no strip (binutils); skipped"; exit 0; }
saved=0 kept=0
backup=$(mktemp)
while IFS= read -r -d '' lib; do
  before=$(stat -c %s "$lib")
  cp -p "$lib" "$backup"
  strip --strip-unneeded "$lib" 2>/dev/null || { cp -p "$backup" "$lib"; continue; }
  if (python -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1])' "$lib") >/dev/null 2>&1; then
    saved=$((saved + before - $(stat -c %s "$lib")))
  else
    cp -p "$backup" "$lib"
    kept=$((kept + 1))
  fi
done < <(find "$DIR" -type f -name '*.so*' -size +100k -print0)
rm -f "$backup"
echo "strip-shared-libs: $((saved / 1000000)) MB saved; $kept libraries left as they were"

#!/usr/bin/env bash
# Build and install an interface package under interfaces/ (vision_msgs by default; also
# panoptic_depthlab_msgs) into a virtualenv that holds the ROS 2 PyPI wheels. No wheel exists for
# either, so we run rosidl ourselves with plain cmake. Idempotent: skips when the package already
# imports from a system ROS 2, or when the venv already holds a build of exactly these interface files.
#
# Usage: bash scripts/build_vision_msgs.sh VENV_DIR [PACKAGE]   (PACKAGE: vision_msgs | panoptic_depthlab_msgs)
# Env:   VISION_MSGS_BUILD_DIR (default: VENV_DIR/.build/PACKAGE, outside the git tree's
#        tracked files), VISION_MSGS_FORCE=1 to rebuild regardless, BUILD_JOBS (default: nproc),
#        VISION_MSGS_BUILD_TYPE (default: Release).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 VENV_DIR [vision_msgs|panoptic_depthlab_msgs]" >&2
  exit 2
fi
VENV="$(cd "$1" && pwd)"
PY="$VENV/bin/python"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG="${2:-vision_msgs}"
case "$PKG" in
  vision_msgs) CHECK_TYPES="Detection3DArray, LabelInfo, Detection2DArray" ;;
  panoptic_depthlab_msgs) CHECK_TYPES="TrackedSegment, TrackedSegmentArray" ;;
  *) echo "error: unknown interface package '$PKG' (vision_msgs or panoptic_depthlab_msgs)" >&2; exit 2 ;;
esac
SRC="$REPO/interfaces/$PKG"
BUILD_DIR="${VISION_MSGS_BUILD_DIR:-$VENV/.build/$PKG}"
STAMP="$VENV/share/$PKG/panoptic_depthlab_build.sha256"
JOBS="${BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

[ -x "$PY" ] || { echo "error: $PY not found; create the venv first" >&2; exit 1; }
[ -f "$SRC/CMakeLists.txt" ] || { echo "error: $SRC/CMakeLists.txt missing" >&2; exit 1; }

# Hash of everything that defines the package, so a changed .msg triggers a rebuild.
SRC_HASH="$(cd "$SRC" && cat package.xml CMakeLists.txt msg/*.msg | sha256sum | cut -d' ' -f1)"

check_import() {
  "$PY" -c "from $PKG.msg import $CHECK_TYPES" >/dev/null 2>&1
}
module_path() {
  "$PY" -c "import $PKG, os; print(os.path.dirname(os.path.abspath($PKG.__file__)))" 2>/dev/null || true
}

if [ "${VISION_MSGS_FORCE:-0}" != "1" ] && check_import; then
  MOD="$(module_path)"
  case "$MOD" in
    "$VENV"/*)
      if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SRC_HASH" ]; then
        echo "$PKG: already built into $VENV from the current interface files; skipping"
        exit 0
      fi
      echo "$PKG: venv build is stale (interface files changed); rebuilding" ;;
    *)
      echo "$PKG: provided by the environment ($MOD); skipping the build"
      exit 0 ;;
  esac
fi

command -v cmake >/dev/null || { echo "error: cmake not found (apt-get install cmake)" >&2; exit 1; }
command -v c++ >/dev/null || command -v g++ >/dev/null || { echo "error: no C/C++ compiler found" >&2; exit 1; }

T0=$(date +%s)
echo "$PKG: installing the ROS 2 build wheels"
"$PY" -m pip install -q -r "$REPO/requirements/ros-build.txt"

# The wheels' exported CMake files name the wheel builder's Python and numpy include dirs
# (/opt/python/cp311-cp311/...). Point them at this venv's, or the generated C extension won't compile.
"$PY" - "$VENV" <<'PYEOF'
import glob, os, re, sys, sysconfig
import numpy
venv = sys.argv[1]
py_inc = sysconfig.get_paths()["include"]
np_inc = numpy.get_include()
if not os.path.isfile(os.path.join(py_inc, "Python.h")):
    sys.exit(f"error: Python.h not found in {py_inc}; install the Python development headers")
np_pat = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include")
py_pat = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
changed = 0
for path in glob.glob(os.path.join(venv, "share", "*", "cmake", "*.cmake")):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if "/opt/python/" not in text:
        continue
    new = py_pat.sub(py_inc, np_pat.sub(np_inc, text))
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
        changed += 1
print(f"interfaces: rewrote builder include paths in {changed} cmake files -> {py_inc}, {np_inc}")
PYEOF

export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Fresh build dir each time: a cache from a different venv or a failed configure must not leak in.
rm -rf "$BUILD_DIR"
mkdir -p "$BUILD_DIR"
echo "$PKG: configuring in $BUILD_DIR"
cmake -S "$SRC" -B "$BUILD_DIR" \
  -DCMAKE_BUILD_TYPE="${VISION_MSGS_BUILD_TYPE:-Release}" \
  -DPython3_EXECUTABLE="$PY" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$VENV" >"$BUILD_DIR/configure.log" 2>&1 \
  || { tail -n 40 "$BUILD_DIR/configure.log" >&2; echo "error: cmake configure failed (log: $BUILD_DIR/configure.log)" >&2; exit 1; }
echo "$PKG: building with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS" >"$BUILD_DIR/build.log" 2>&1 \
  || { tail -n 40 "$BUILD_DIR/build.log" >&2; echo "error: build failed (log: $BUILD_DIR/build.log)" >&2; exit 1; }
cmake --install "$BUILD_DIR" >"$BUILD_DIR/install.log" 2>&1 \
  || { tail -n 40 "$BUILD_DIR/install.log" >&2; echo "error: install failed (log: $BUILD_DIR/install.log)" >&2; exit 1; }

# Check in a clean environment, as a user would run it.
if ! env -u AMENT_PREFIX_PATH -u CMAKE_PREFIX_PATH -u LD_LIBRARY_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE \
    "$PY" -c "from $PKG.msg import $CHECK_TYPES"; then
  echo "error: $PKG was installed but does not import from $PY" >&2
  exit 1
fi
echo "$SRC_HASH" >"$STAMP"
echo "$PKG: built and installed into $VENV in $(( $(date +%s) - T0 )) s"

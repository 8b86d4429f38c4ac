#!/usr/bin/env sh
# Build the C reacher controller against a C export and the mujoco wheel's own C library.
#   examples/c_controller/build.sh EXPORT_DIR OUTPUT   (EXPORT_DIR holds policy.h and policy.c)
set -eu
here=$(dirname "$0")
mj=${MUJOCO_DIR:-$(python -c "import mujoco, os; print(os.path.dirname(mujoco.__file__))")}
lib=$(ls "$mj"/libmujoco.so* | head -n 1)
${CC:-cc} -std=c99 -O2 -Wall -Wextra -Werror -I"$1" -I"$mj/include" "$here/controller.c" \
    "$1/policy.c" "$lib" -Wl,-rpath,"$mj" -lm -o "$2"

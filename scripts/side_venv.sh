#!/usr/bin/env bash
# Side venvs for the inpainting servers (docs/removal.md, "Inpainting servers"):
#
#   scripts/side_venv.sh lama-cleaner|iopaint          install when missing; print the venv's path
#   scripts/side_venv.sh --path lama-cleaner|iopaint   print the path if the venv is complete, else exit 1
#
# Each server pins libraries the main stack cannot share (transformers 4.27 / diffusers 0.16 for
# lama-cleaner, Pillow 9.5 / gradio 4.21 / fastapi 0.108 for IOPaint), so each gets its own venv, kept
# OUTSIDE the checkout in ${IEIW_SIDE_VENVS:-$HOME/.cache/ieiw/venvs}/<name>-<key>, where <key> is the
# first 12 hex digits of the sha256 of its pin list (the interpreter's minor version included). A
# second clone, or CI on the same machine, finds it and reuses it. A venv counts as complete only once
# its stamp file exists; the stamp is written last, so an interrupted install is redone from scratch.
# Concurrent calls for the same venv wait for each other (flock).
#
# Python: both pins need 3.8-3.11 (Pillow 9.5.0 has no wheels for 3.12+, and lama-cleaner imports
# imghdr, gone in 3.13). SIDE_VENV_PYTHON picks the interpreter (default: python3.11).
set -euo pipefail

check_only=0
if [ "${1:-}" = "--path" ]; then check_only=1; shift; fi
name=${1:-}
case "$name" in
  lama-cleaner)
    # 1.2.5 fails to start with a newer huggingface-hub (`cannot import name 'cached_download'`)
    pins="lama-cleaner==1.2.5
huggingface-hub==0.25.2"
    entry=lama-cleaner;;
  iopaint)
    pins="iopaint==1.6.0"
    entry=iopaint;;
  *)
    echo "usage: scripts/side_venv.sh [--path] lama-cleaner|iopaint" >&2
    exit 2;;
esac

python=${SIDE_VENV_PYTHON:-python3.11}
if ! pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
  echo "side_venv: cannot run $python (set SIDE_VENV_PYTHON to a Python 3.8-3.11)" >&2
  exit 2
fi
case "$pyver" in
  3.8|3.9|3.10|3.11) ;;
  *) echo "side_venv: $name needs Python 3.8-3.11, $python is $pyver (set SIDE_VENV_PYTHON)" >&2; exit 2;;
esac

pinlist=$(printf '%s\npython==%s\n' "$pins" "$pyver")
key=$(printf '%s' "$pinlist" | sha256sum | cut -c1-12)
root=${IEIW_SIDE_VENVS:-$HOME/.cache/ieiw/venvs}
venv=$root/$name-$key
stamp=$venv/.ieiw-side-venv-complete

if [ -f "$stamp" ]; then echo "$venv"; exit 0; fi
if [ "$check_only" = 1 ]; then
  echo "side_venv: $venv is missing or incomplete (run: make $name)" >&2
  exit 1
fi

mkdir -p "$root"
exec 9>"$venv.lock"
flock 9
if [ ! -f "$stamp" ]; then  # another caller may have finished it while we waited
  start=$(date +%s)
  echo "side_venv: installing $name into $venv (about 6 GB, 2-3 min from a local wheel cache)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # shellcheck disable=SC2086  # the pins are one per line, no spaces
  "$venv/bin/python" -m pip install -q $pins >&2
  "$venv/bin/$entry" --help >/dev/null  # the server's command runs (imports resolve)
  printf '%s\n' "$pinlist" > "$stamp.tmp"
  mv "$stamp.tmp" "$stamp"
  echo "side_venv: $name ready in $(( $(date +%s) - start )) s" >&2
fi
echo "$venv"

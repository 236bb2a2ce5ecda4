#!/usr/bin/env bash
# Debian packages the tests drive, installed once where missing (root, apt): Chromium for the
# browser tests, and QEMU's user-mode emulator to train on an emulated Intel CPU
# (tests/test_machine.py). QEMU 7.2, bookworm's own, miscomputes AVX2 gathers (NaN in
# grid_sample), so bookworm takes 10.0 from its backports. Where they cannot be installed, those
# tests skip.
set -euo pipefail
qemu_major() { qemu-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p'; }
browser=$(command -v chromium >/dev/null 2>&1 || echo chromium)
emulator=$([ "$(uname -m)" != "x86_64" ] || [ "$(qemu_major || true)" -ge 10 ] 2>/dev/null || echo qemu-user)
if [ -z "$browser$emulator" ]; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$browser $emulator missing and cannot be installed here (needs root and apt-get); the tests that use them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
release=()
if [ -n "$emulator" ] && grep -q '^VERSION_CODENAME=bookworm$' /etc/os-release; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/bookworm-backports.list
  release=(-t bookworm-backports)
fi
apt-get update -qq >/dev/null
if [ -n "$browser" ]; then apt-get install -y -qq chromium >/dev/null; fi
# without its recommended binfmt registration: the tests call qemu-x86_64 themselves
if [ -n "$emulator" ] && ! apt-get install -y -qq --no-install-recommends "${release[@]}" qemu-user >/dev/null; then
  echo "qemu-user could not be installed; the emulated-CPU test will skip" >&2
fi

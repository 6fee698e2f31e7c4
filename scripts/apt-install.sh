#!/usr/bin/env bash
# Installs Debian packages when run as root; anyone else is told what to run.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
else
  echo "missing Debian packages: run  sudo apt-get install $*" >&2
  exit 1
fi

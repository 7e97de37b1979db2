#!/usr/bin/env bash
# Install Debian packages quietly: no questions (DEBIAN_FRONTEND=noninteractive), no debconf warnings,
# apt's own output kept in a log that is shown only when the install fails. Packages already installed
# are not fetched again. Needs root.
#
# Usage: docker/apt_install.sh PACKAGE [PACKAGE ...]
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true DEBCONF_NOWARNINGS=yes

missing=()
for pkg in "$@"; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -gt 0 ] || exit 0

log=$(mktemp /tmp/apt_install.XXXXXX.log)
echo "apt_install.sh: installing ${missing[*]} (Debian packages; log $log)"
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confold "${missing[@]}"; } >"$log" 2>&1; then
    echo "apt_install.sh: installing ${missing[*]} failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
fi
rm -f "$log"

#!/bin/sh
# deps.sh - the Debian packages that building and testing mpk need.
#
# Checks each with dpkg; installs the missing ones with apt-get when run as
# root, and otherwise prints the apt-get line to run and exits 1. `make
# check`, `make demo` and .ci/run run it first. On a machine without dpkg
# (not Debian or Ubuntu) it checks nothing and says so.
#
#   sh tools/deps.sh           check, and install what is missing (as root)
#   sh tools/deps.sh --list    print the package names
#
# Exit status: 0 everything is there (now), 1 something is missing or the
# install failed.
pkgs="gcc libc6-dev make flex bison check pkg-config mandoc libjansson-dev zlib1g-dev libpcre2-dev libutf8proc-dev"

if [ "$1" = --list ]; then
    echo $pkgs
    exit 0
fi
if ! command -v dpkg >/dev/null 2>&1; then
    echo "deps.sh: no dpkg here: not checking the prerequisites (on Debian: $pkgs)" >&2
    exit 0
fi
need=
for p in $pkgs; do
    # installed, not merely known (a removed package keeps its status entry)
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need="$need $p"
done
[ -z "$need" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing Debian packages:$need" >&2
    echo "deps.sh: install them (as root) with" >&2
    echo "    apt-get update && apt-get install -y$need" >&2
    exit 1
fi
echo "deps.sh: installing:$need" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends $need >&2 || {
    echo "deps.sh: apt-get install failed" >&2
    exit 1
}

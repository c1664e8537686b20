#!/usr/bin/env bash
#  Install the Debian packages kvtier builds and tests with. Idempotent:
#  does nothing when everything is present. As root it calls apt-get; as
#  anyone else it prints the exact line to run and fails.
set -eu
packages=(build-essential cmake pkg-config libzmq3-dev libczmq-dev libmsgpack-dev
          liburing-dev libxxhash-dev libnuma-dev python3 python3-zmq python3-msgpack)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "kvtier: missing packages; run as root:" >&2
    echo "    apt-get update && $line" >&2
    exit 1
fi
echo "kvtier: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
$line

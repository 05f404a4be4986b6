#!/bin/sh
# Installs what building and testing herd needs on Debian 12, only if missing.
# Run as root, or with sudo available; a no-op when everything is there.
set -eu

pkgs="gcc libc6-dev pkg-config meson ninja-build libev-dev libjansson-dev
libsystemd-dev check valgrind socat jq clang-format systemd procps strace
python3 python3-pytest git groff-base binutils
openssh-server openssh-client munge slurmctld slurmd slurm-client iproute2 util-linux
g++ libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
python3-distributed parallel supervisor"

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	as_root=""
elif command -v sudo >/dev/null 2>&1; then
	as_root="sudo"
else
	echo "setup-debian: missing packages:$missing (run as root or install sudo)" >&2
	exit 1
fi
echo "setup-debian: installing$missing"
# tests/remote's test beds start their own sshd, munged and Slurm daemons, and
# bench/peers its own supervisord: the packages' system services must not
# start (policy-rc.d says no).
pol=/usr/sbin/policy-rc.d
made=
if [ ! -e "$pol" ]; then
	printf '#!/bin/sh\nexit 101\n' | $as_root tee "$pol" >/dev/null
	$as_root chmod 755 "$pol"
	made=1
fi
$as_root apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends $missing
[ -z "$made" ] || $as_root rm -f "$pol"

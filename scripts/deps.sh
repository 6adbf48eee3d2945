#!/usr/bin/env bash
# Bring in the host tools the lab runs, once, only what is missing, saying what it does.
#
#   scripts/deps.sh            the lab's tools (both backends run them on the host or in a netns)
#   scripts/deps.sh --docker   the same, plus a Docker engine with compose, started if it is down
#
# Every `make` target that brings a lab up calls this first, so the first command on a fresh
# machine works; a second call finds everything present and prints nothing.
set -euo pipefail

want_docker=0
for arg in "$@"; do
    case "$arg" in
        --docker) want_docker=1 ;;
        *) echo "usage: $0 [--docker]" >&2; exit 2 ;;
    esac
done

say() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

# package:command — the command that proves the package is there.
tools=(iproute2:ip iputils-ping:ping iperf3:iperf3 tcpdump:tcpdump procps:ps iptables:iptables
    dnsmasq-base:dnsmasq)

missing=()
for pair in "${tools[@]}"; do
    command -v "${pair#*:}" >/dev/null || missing+=("${pair%%:*}")
done
if [ "$want_docker" = 1 ]; then
    if ! docker info >/dev/null 2>&1 && ! command -v dockerd >/dev/null; then
        missing+=(docker.io)
    fi
    if ! docker compose version >/dev/null 2>&1 && ! docker-compose version >/dev/null 2>&1; then
        missing+=(docker-compose)
    fi
fi

if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: run as root (sudo make …) or install them yourself"
    command -v apt-get >/dev/null \
        || die "missing ${missing[*]} and this host has no apt-get: install them with its package manager"
    say "installing ${missing[*]} (apt-get; once)"
    apt-get update -q >/dev/null || die "apt-get update failed: check the host's apt sources"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed (output above)"
fi

[ "$want_docker" = 1 ] || exit 0
docker info >/dev/null 2>&1 && exit 0

log=/var/log/vpnlab-dockerd.log
say "no Docker engine answers: starting dockerd (log: $log)"
if [ -d /run/systemd/system ]; then
    systemctl start docker || die "systemctl start docker failed: journalctl -u docker says why"
else
    nohup dockerd >"$log" 2>&1 &
fi
for _ in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done
tail -n 20 "$log" >&2 2>/dev/null || true
die "dockerd did not come up in 30 s (log above): start it by hand, or use BACKEND=netns"

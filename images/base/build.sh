#!/usr/bin/env bash
# Build vpnlab/base:bookworm, the Debian root file system every lab node starts from.
#
# Three paths, fastest first:
#   1. the image exists and its label matches the hash of packages.txt: nothing to do;
#   2. a registry answers: FROM debian:bookworm-slim + apt-get install (images/base/Dockerfile);
#   3. no registry (air-gapped CI, this kind of machine): mmdebstrap or debootstrap builds the
#      same package list from the Debian mirror the host's apt uses, and `docker import` turns
#      the tree into an image. Debian's own image maintainers use the same recipe.
#
# Environment: VPNLAB_BASE_IMAGE (default vpnlab/base:bookworm), DEBIAN_MIRROR (default: the
# host's apt mirror), VPNLAB_PULL_TIMEOUT (seconds, default 30), VPNLAB_CACHE (default .cache).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${VPNLAB_BASE_IMAGE:-vpnlab/base:bookworm}
suite=bookworm
cache=${VPNLAB_CACHE:-$repo/.cache}
# Bump when the recipe below changes in a way that must rebuild the image.
recipe=1
start=$SECONDS

phase() { printf '[base %3ds] %s\n' "$((SECONDS - start))" "$*"; }
die() { printf '[base %3ds] error: %s\n' "$((SECONDS - start))" "$*" >&2; exit 1; }

if ! docker info >/dev/null 2>&1; then
    die "docker info failed: is the Docker daemon running? (\`make deps\` installs and starts one)"
fi

packages=$(sed -e 's/#.*//' "$here/packages.txt" | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
hash=$(printf 'recipe %s\nsuite %s\n%s\n' "$recipe" "$suite" "$packages" | sha256sum | cut -c1-16)

current=$(docker image inspect -f '{{index .Config.Labels "vpnlab.packages"}}' "$image" 2>/dev/null \
    || true)
if [ "$current" = "$hash" ]; then
    phase "$image is up to date (packages $hash)"
    exit 0
fi
phase "building $image (packages $hash): $(echo "$packages" | tr '\n' ' ')"

# -- path 2: a registry answers ------------------------------------------------------------------
if timeout "${VPNLAB_PULL_TIMEOUT:-30}" docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    phase "pulled debian:bookworm-slim; docker build"
    docker build -q --label "vpnlab.packages=$hash" -t "$image" "$here" >/dev/null
    phase "done: $image"
    exit 0
fi
phase "no registry answers (docker pull debian:bookworm-slim failed): building offline"

# -- path 3: offline, from the host's Debian mirror ----------------------------------------------
host_mirror() {
    # The first bookworm "main" source of the host's apt, deb822 (*.sources) or one-line format.
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v suite="$suite" '
            function flush() {
                if (uris != "" && (" " suites " ") ~ (" " suite " ") && (" " comps " ") ~ / main /) {
                    split(uris, u, " "); print u[1]; found = 1; exit
                }
                uris = ""; suites = ""; comps = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^URIs:/ { uris = $0; sub(/^URIs:[ \t]*/, "", uris) }
            /^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites) }
            /^Components:/ { comps = $0; sub(/^Components:[ \t]*/, "", comps) }
            END { if (!found) flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v suite="$suite" '
            $1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }
        ' "$f"
    done
}
mirror=${DEBIAN_MIRROR:-$(host_mirror | head -n 1)}
[ -n "$mirror" ] || die "no Debian $suite mirror found in /etc/apt/sources.list{,.d}: set DEBIAN_MIRROR=<url>"
phase "mirror: $mirror"

if command -v mmdebstrap >/dev/null; then
    tool=mmdebstrap
elif command -v debootstrap >/dev/null; then
    tool=debootstrap
else
    phase "installing debootstrap on the host (apt-get)"
    apt-get install -y -q debootstrap >/dev/null || die "apt-get install debootstrap failed"
    tool=debootstrap
fi

mkdir -p "$cache/logs"
log="$cache/logs/base-$tool.log"
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/vpnlab-base.XXXXXX")
cleanup() {
    # debootstrap mounts /proc and /sys inside the tree; never let rm follow them.
    local m
    for m in $(findmnt -rn -o TARGET | grep "^$tmp/" | sort -r); do umount -l "$m" || true; done
    rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT

included=$(echo "$packages" | paste -sd, -)
phase "$tool --variant=minbase $suite (log: $log)"
if [ "$tool" = mmdebstrap ]; then
    # mmdebstrap already empties the apt caches and lists, and writes the tar directly. The
    # merged-usr hook sets up /usr as debootstrap does, without the usrmerge package (and perl).
    hooks=()
    [ -d /usr/share/mmdebstrap/hooks/merged-usr ] \
        && hooks=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
    if ! mmdebstrap --variant=minbase "${hooks[@]}" --include="$included" "$suite" \
        "$tmp/root.tar" "$mirror" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "mmdebstrap failed; full log: $log"
    fi
    phase "import"
    docker import -c 'CMD ["sleep", "infinity"]' -c 'ENV LANG=C.UTF-8' \
        -c "LABEL vpnlab.packages=$hash" "$tmp/root.tar" "$image" >/dev/null
else
    mkdir -p "$cache/debs"
    if ! debootstrap --variant=minbase --include="$included" --cache-dir="$cache/debs" \
        "$suite" "$tmp/root" "$mirror" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "debootstrap failed; full log: $log"
    fi
    phase "trim apt caches and lists"
    rm -f "$tmp"/root/var/cache/apt/archives/*.deb "$tmp"/root/var/cache/apt/*.bin
    find "$tmp/root/var/lib/apt/lists" -mindepth 1 -maxdepth 1 -type f -delete
    phase "import ($(du -sm "$tmp/root" | cut -f1) MB tree)"
    tar --numeric-owner -C "$tmp/root" -c . \
        | docker import -c 'CMD ["sleep", "infinity"]' -c 'ENV LANG=C.UTF-8' \
            -c "LABEL vpnlab.packages=$hash" - "$image" >/dev/null
fi
phase "done: $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1 / 1e6}'))"

#!/usr/bin/env bash
# Build vpnlab/base:bookworm, the Debian root file system every lab node starts from.
#
# Three paths, fastest first:
#   1. the image exists and its label matches the hash of packages.txt: nothing to do;
#   2. a registry answers: FROM debian:bookworm-slim + apt-get install (images/base/Dockerfile);
#   3. no registry (air-gapped CI, this kind of machine): mmdebstrap builds the same package
#      list from the host's own apt sources and network options, and `docker import` turns the
#      tree into an image. Debian's own image maintainers use the same recipe.
#
# Environment: VPNLAB_BASE_IMAGE (default vpnlab/base:bookworm), DEBIAN_MIRROR (default: the
# host's apt sources), VPNLAB_PULL_TIMEOUT (seconds, default 30), VPNLAB_CACHE (default .cache),
# VPNLAB_APT_ETC (default /etc/apt). `build.sh --print-sources` prints the offline path's sources.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${VPNLAB_BASE_IMAGE:-vpnlab/base:bookworm}
suite=bookworm
cache=${VPNLAB_CACHE:-$repo/.cache}
apt_etc=${VPNLAB_APT_ETC:-/etc/apt}  # the apt configuration the offline path reads
# Bump when the recipe below changes in a way that must rebuild the image.
recipe=2
start=$SECONDS

phase() { printf '[base %3ds] %s\n' "$((SECONDS - start))" "$*"; }
die() { printf '[base %3ds] error: %s\n' "$((SECONDS - start))" "$*" >&2; exit 1; }

host_sources() {
    # One-line `deb` entries for every enabled bookworm* suite of the host's apt, deb822 and
    # one-line files alike.
    local f
    for f in "$apt_etc"/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v suite="$suite" '
            function flush(   n, s, i, opts) {
                if (uris != "" && (" " types " ") ~ / deb / && enabled != "no") {
                    opts = signed != "" ? "[signed-by=" signed "] " : ""
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++)
                        if (s[i] == suite || index(s[i], suite "-") == 1)
                            print "deb " opts uris " " s[i] " " comps
                }
                types = uris = suites = comps = signed = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^Types:/ { types = $0; sub(/^Types:[ \t]*/, "", types) }
            /^URIs:/ { uris = $0; sub(/^URIs:[ \t]*/, "", uris); sub(/ .*/, "", uris) }
            /^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites) }
            /^Components:/ { comps = $0; sub(/^Components:[ \t]*/, "", comps) }
            /^Signed-By:/ { signed = $0; sub(/^Signed-By:[ \t]*/, "", signed) }
            /^Enabled:/ { enabled = tolower($2) }
            END { flush() }
        ' "$f"
    done
    for f in "$apt_etc"/sources.list "$apt_etc"/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v suite="$suite" '
            $1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite || index($(i + 1), suite "-") == 1) print
            }
        ' "$f"
    done
}
offline_sources() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "deb $DEBIAN_MIRROR $suite main"; else host_sources | sort -u; fi
}
# --print-sources: what an offline build would install from, then exit (no Docker needed).
if [ "${1:-}" = --print-sources ]; then offline_sources; exit 0; fi

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

# -- path 3: offline, from the host's own apt configuration -------------------------------------
# The image gets the host's bookworm sources (every suite: bookworm, -updates, -security) with
# their keyrings, and the host's network options for apt (proxy, snapshot validity), so it is
# built from exactly where the host's apt-get installs from. DEBIAN_MIRROR overrides the sources.
sources=$(offline_sources)
[ -n "$sources" ] || die "the host's apt has no Debian $suite source (/etc/apt/sources.list{,.d}) \
and no registry answers: set DEBIAN_MIRROR=<a Debian mirror's URL>, or let \`docker pull \
debian:$suite-slim\` work"
phase "package sources (the host's apt): $(echo "$sources" | awk '{print $(NF-1)}' | paste -sd' ')"

if ! command -v mmdebstrap >/dev/null; then
    phase "installing mmdebstrap on the host (apt-get; once)"
    apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null \
        || die "apt-get install mmdebstrap failed: install it by hand (Debian/Ubuntu package mmdebstrap)"
fi

mkdir -p "$cache/logs"
log="$cache/logs/base-mmdebstrap.log"
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/vpnlab-base.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt's network options of the host (proxy, retries, snapshot validity), nothing else of it.
apt-config dump 2>/dev/null \
    | grep -E '^Acquire::((https?|ftp|socks)(::| )|(Check-Valid-Until|Check-Date|Retries|ForceIPv4|ForceIPv6) )' \
    >"$tmp/apt.conf" || true

included=$(echo "$packages" | paste -sd, -)
phase "mmdebstrap --variant=minbase $suite (log: $log)"
# The merged-usr hook sets up /usr as debootstrap does, without the usrmerge package (and perl).
hooks=()
[ -d /usr/share/mmdebstrap/hooks/merged-usr ] \
    && hooks=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
if ! echo "$sources" | mmdebstrap --variant=minbase "${hooks[@]}" --aptopt="$tmp/apt.conf" \
    --include="$included" "$suite" "$tmp/root.tar" - >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "mmdebstrap failed; full log: $log"
fi
phase "import"
docker import -c 'CMD ["sleep", "infinity"]' -c 'ENV LANG=C.UTF-8' \
    -c "LABEL vpnlab.packages=$hash" "$tmp/root.tar" "$image" >/dev/null
phase "done: $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1 / 1e6}'))"

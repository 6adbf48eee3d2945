#!/usr/bin/env bash
# Build vpnlab/node:latest: the base image plus a venv (/opt/vpnlab) holding the project.
#
# Wheels are made on the host (which reaches the package index) into .cache/wheelhouse, for
# the image's Python, libc and architecture; the image build then installs them with
# `pip --no-index`, so it needs no network. The image carries a label with the hash of every
# input (base image id, sources, pins, Dockerfile): when it matches, nothing is done.
#
# Environment: VPNLAB_IMAGE (default vpnlab/node:latest), VPNLAB_BASE_IMAGE, PYTHON (the
# host interpreter whose pip makes the wheels, default python3), VPNLAB_CACHE (default .cache).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${VPNLAB_IMAGE:-vpnlab/node:latest}
base=${VPNLAB_BASE_IMAGE:-vpnlab/base:bookworm}
python=${PYTHON:-python3}
cache=${VPNLAB_CACHE:-$repo/.cache}
wheelhouse=$cache/wheelhouse
start=$SECONDS

phase() { printf '[node %3ds] %s\n' "$((SECONDS - start))" "$*"; }
die() { printf '[node %3ds] error: %s\n' "$((SECONDS - start))" "$*" >&2; exit 1; }

docker info >/dev/null 2>&1 \
    || die "docker info failed: is the Docker daemon running? (\`make deps\` starts one)"
base_id=$(docker image inspect -f '{{.Id}}' "$base" 2>/dev/null) \
    || die "no image $base: build it first with images/base/build.sh (\`make images\`)"

cd "$repo"
# Everything that ends up in the image; a change to any of it rebuilds.
inputs=()
for p in pyproject.toml setup.cfg setup.py README.md LICENSE vpn requirements/test.txt \
    images/node; do
    [ -e "$p" ] && inputs+=("$p")
done
hash=$(
    {
        echo "$base_id"
        find "${inputs[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
)
current=$(docker image inspect -f '{{index .Config.Labels "vpnlab.inputs"}}' "$image" 2>/dev/null \
    || true)
if [ "$current" = "$hash" ]; then
    phase "$image is up to date (inputs $hash)"
    exit 0
fi
phase "building $image (inputs $hash)"

# The target the wheels must fit: the base image's Python, glibc and machine.
read -r py_major py_minor glibc machine < <(
    docker run --rm --network none "$base" python3 -c \
        'import platform, sys; print(*sys.version_info[:2], platform.libc_ver()[1], platform.machine())'
)
# pip does not widen an explicit --platform to older glibc versions: list them all.
platforms=()
for ((minor = ${glibc#*.}; minor >= 5; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_${machine}")
done
platforms+=(--platform "manylinux2014_${machine}" --platform "manylinux1_${machine}")
phase "target: CPython $py_major.$py_minor, glibc $glibc, $machine"

mkdir -p "$cache/logs"
log="$cache/logs/node-build.log"
: >"$log"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vpnlab-node.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The project's wheel, built from a clean copy (an in-tree build/ can keep deleted modules).
mkdir -p "$tmp/src" "$tmp/project" "$tmp/deps"
for p in "${inputs[@]}"; do
    case $p in requirements/* | images/*) ;; *) cp -r "$p" "$tmp/src/" ;; esac
done
find "$tmp/src" -name __pycache__ -prune -exec rm -rf {} +
phase "project wheel (log: $log)"
if ! "$python" -m pip wheel --no-deps --disable-pip-version-check -w "$tmp/project" "$tmp/src" \
    >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "pip wheel of the project failed; full log: $log"
fi
wheel=$(ls "$tmp"/project/*.whl)

# Its dependencies as binary wheels for the image, at the versions pinned for the host.
phase "dependency wheels for the image"
if ! "$python" -m pip download --disable-pip-version-check --only-binary=:all: \
    "${platforms[@]}" --python-version "$py_major.$py_minor" --implementation cp \
    -c requirements/test.txt -d "$tmp/deps" "$wheel" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "pip download of the dependencies failed; full log: $log"
fi
rm -f "$tmp/deps/$(basename "$wheel")"
rm -rf "$wheelhouse"
mkdir -p "$wheelhouse"
mv "$tmp/deps" "$tmp/project" "$wheelhouse/"
phase "wheelhouse: $(ls "$wheelhouse/deps" | tr '\n' ' ')"

phase "docker build"
if ! docker build -f "$here/Dockerfile" --label "vpnlab.inputs=$hash" -t "$image" "$wheelhouse" \
    >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "docker build failed; full log: $log"
fi

# A smoke test: the image must run the project's command. A failure here is the project's
# code, not the image: warn and keep the image, so the rest of the lab and tests still run.
if [ -f vpn/cli.py ]; then
    check=(vpn --help)
else
    check=(/opt/vpnlab/bin/python -c 'import vpn')
fi
size=$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1 / 1e6}')
if out=$(docker run --rm --network none "$image" "${check[@]}" 2>&1); then
    phase "done: $image ($size; \`${check[*]}\` works)"
else
    printf '%s\n' "$out" | tail -n 8 >&2
    phase "done: $image ($size) -- WARNING: \`${check[*]}\` fails in it (output above)"
fi

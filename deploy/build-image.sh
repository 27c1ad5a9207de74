#!/usr/bin/env bash
# Build the Ambry-py image (Dockerfile at the repository root) without an image registry.
#
#   deploy/build-image.sh [--wheels-in-container]
#
# The image is built from the committed tree of AMBRY_SOURCE (a git revision, default HEAD;
# AMBRY_SOURCE=worktree takes the working tree as it is, uncommitted edits included). HEAD is
# the default on purpose: an image is something you deploy, so it should be exactly one
# commit, rebuildable later and named by its revision (the image's
# org.opencontainers.image.revision label), not whatever the checkout held that minute. The
# script says when uncommitted edits are left out.
#
# 1. The base (the Dockerfile's AMBRY_BASE): the official python:3.11-slim when it is present
#    locally (AMBRY_BASE_PULL=1 pulls it, where a registry is reachable); else our own
#    ambry-py-base:bookworm, made once with debootstrap (a minimal Debian bookworm with
#    python3 + python3-venv, Python 3.11) and `docker import`. It never takes the official
#    name, which would shadow python:3.11-slim for everything else on the docker host (an
#    older version of this script did that: such an image is renamed to ours). AMBRY_BASE
#    names any other base.
# 2. The wheels: ambry (with its C extension), its dependencies and its `ec` extra (pyeclib, for
#    erasure-coded partitions: docs/erasure-coding.md), built into
#    build/docker-wheels/ by the host's Python when it has the image's major.minor version (the
#    wheels must be cp3XX of the image's interpreter), else inside a build container of the
#    base image with host networking and the host's CA bundle (--wheels-in-container forces it).
# 3. docker build: the image installs those wheels offline (pip --no-index).
#
# Environment: AMBRY_IMAGE (default ambry-py:latest), AMBRY_SOURCE (default HEAD), PYTHON
# (default .venv/bin/python, else python3), DEBIAN_MIRROR (default http://deb.debian.org/debian),
# AMBRY_BASE (default: see 1.), AMBRY_BASE_PULL=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
IMAGE=${AMBRY_IMAGE:-ambry-py:latest}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SOURCE=${AMBRY_SOURCE:-HEAD}
CA_BUNDLE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
IN_CONTAINER=0
[[ "${1:-}" == "--wheels-in-container" ]] && IN_CONTAINER=1

say() { printf '==> %s\n' "$*" >&2; }

TMP_DIRS=()
cleanup() { if ((${#TMP_DIRS[@]})); then rm -rf "${TMP_DIRS[@]}"; fi; }
trap cleanup EXIT

# ---------------------------------------------------------------- 0. the source tree
REVISION=unknown
if [[ "$SOURCE" == worktree ]] || ! git rev-parse --git-dir >/dev/null 2>&1; then
    SRC=$ROOT
    if git rev-parse --git-dir >/dev/null 2>&1; then
        REVISION="$(git rev-parse HEAD)$(git diff --quiet HEAD || echo -dirty)"
    fi
    say "source: the working tree $SRC"
else
    SRC=$(mktemp -d "${TMPDIR:-/tmp}/ambry-src.XXXXXX")
    TMP_DIRS+=("$SRC")
    git archive --format=tar "$SOURCE" | tar -x -C "$SRC"
    REVISION=$(git rev-parse "$SOURCE^{commit}")
    say "source: $SOURCE ($(git rev-parse --short "$SOURCE"))"
    if [[ "$SOURCE" == HEAD ]] && ! git diff --quiet HEAD; then
        say "note: uncommitted edits of this checkout are NOT in the image" \
            "(commit them, or AMBRY_SOURCE=worktree for a throwaway image)"
    fi
fi
OFFICIAL_BASE=python:3.11-slim
OWN_BASE=ambry-py-base:bookworm
WHEELS=$SRC/build/docker-wheels

# ---------------------------------------------------------------- 1. base image
# an older version of this script tagged its debootstrap image python:3.11-slim: give it our
# own name, so the official name means the official image again on this host
if docker image history --no-trunc --format '{{.Comment}}' "$OFFICIAL_BASE" 2>/dev/null \
        | grep -q 'deploy/build-image.sh'; then
    say "$OFFICIAL_BASE here is a debootstrap image of this script: renaming it $OWN_BASE"
    docker tag "$OFFICIAL_BASE" "$OWN_BASE"
    docker rmi "$OFFICIAL_BASE" >/dev/null   # removes only that tag
fi
if [[ -n "${AMBRY_BASE:-}" ]]; then
    BASE=$AMBRY_BASE
    docker image inspect "$BASE" >/dev/null 2>&1 || docker pull "$BASE"
elif docker image inspect "$OFFICIAL_BASE" >/dev/null 2>&1; then
    BASE=$OFFICIAL_BASE
    say "base image $BASE is present"
elif [[ "${AMBRY_BASE_PULL:-0}" == 1 ]]; then
    BASE=$OFFICIAL_BASE
    say "pulling $BASE"
    docker pull "$BASE"
elif docker image inspect "$OWN_BASE" >/dev/null 2>&1; then
    BASE=$OWN_BASE
    say "base image $BASE is present"
else
    BASE=$OWN_BASE
    command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
    ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/ambry-rootfs.XXXXXX")
    TMP_DIRS+=("$ROOTFS")
    say "no $BASE here: debootstrap bookworm (minbase + python3, python3-venv) into $ROOTFS"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$ROOTFS" "$MIRROR" \
        > "$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
    rm -f "$ROOTFS.log"
    # no package caches or lists in the image
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
           "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
    say "docker import -> $BASE"
    tar -C "$ROOTFS" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change 'LABEL org.ambry-py.base=debootstrap' \
        --message "debootstrap bookworm minbase + python3 (deploy/build-image.sh)" \
        - "$BASE" >/dev/null
    rm -rf "$ROOTFS"
fi

image_py=$(docker run --rm --network none --entrypoint python3 "$BASE" \
    -c 'import sys; print("%d.%d" % sys.version_info[:2])')
host_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
say "python in $BASE: $image_py; host $PYTHON: $host_py"

# ---------------------------------------------------------------- 2. wheels
rm -rf "$WHEELS"
mkdir -p "$WHEELS"
if [[ "$image_py" == "$host_py" && "$IN_CONTAINER" == 0 ]]; then
    say "building wheels on the host into $WHEELS"
    # (the filter drops pip's notes about this machine's own index settings)
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$WHEELS" "$SRC[ec]" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
else
    say "building wheels in a $BASE container (host network, host CA bundle)"
    docker run --rm --network host \
        -v "$SRC":/src:ro -v "$WHEELS":/wheels \
        -v "$CA_BUNDLE":/etc/ssl/certs/host-ca.crt:ro \
        -e PIP_CERT=/etc/ssl/certs/host-ca.crt -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
        -e DEBIAN_FRONTEND=noninteractive -e HOST_UID="$(id -u)" -e HOST_GID="$(id -g)" \
        --entrypoint sh "$BASE" -ec '
            apt-get update -q >/dev/null
            apt-get install -y -q --no-install-recommends gcc libc6-dev python3-dev >/dev/null
            mkdir /tmp/src
            tar -C /src --exclude=./.venv --exclude=./.git --exclude=./data \
                --exclude=./build -c . | tar -C /tmp/src -x
            python3 -m venv /tmp/venv
            /tmp/venv/bin/pip wheel --quiet --wheel-dir /wheels "/tmp/src[ec]"
            chown -R "$HOST_UID:$HOST_GID" /wheels'
fi
tag=cp${image_py/./}
ls "$WHEELS"/ambry-*-"$tag"-"$tag"-*.whl >/dev/null 2>&1 \
    || { echo "no $tag wheel of ambry in $WHEELS: $(ls "$WHEELS")" >&2; exit 1; }
say "$(ls "$WHEELS" | wc -l) wheels: $(ls "$WHEELS" | tr '\n' ' ')"

# ---------------------------------------------------------------- 3. image
say "docker build -t $IMAGE"
# the legacy builder: works with or without the buildx plugin
DOCKER_BUILDKIT=0 docker build --quiet -t "$IMAGE" --build-arg AMBRY_BASE="$BASE" \
    --build-arg AMBRY_REVISION="$REVISION" "$SRC" 2>&1 >/dev/null | { grep -v -i -E "deprecated|buildkit|environment-variable|^ *$" || true; } >&2
# only dangling images of this Dockerfile: the install stage, and the previous untagged build
docker image prune --force --filter label=org.ambry-py.stage=install >/dev/null
docker image prune --force --filter label=org.ambry-py.image >/dev/null
docker image inspect "$IMAGE" --format '==> {{index .RepoTags 0}}: {{.Size}} bytes, user {{.Config.User}}' >&2

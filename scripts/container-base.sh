#!/usr/bin/env bash
# Podman (with runc and podman-compose), and a Debian bookworm base image made with debootstrap from Debian's archive: containers
# without a Docker engine and without a registry (measured recipe: ../shared/containers.md). Idempotent.
# Installs podman, runc and debootstrap when missing (root or passwordless sudo, apt). Prints the base image.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"
BASE="${DRIFTLINE_BASE_IMAGE:-localhost/debian:bookworm}"
missing=()
for c in podman runc debootstrap podman-compose; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || { echo "container-base: please install: ${missing[*]}" >&2; exit 1; }
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  echo "container-base: installing ${missing[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
if ! podman image exists "$BASE"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "container-base: debootstrap bookworm (minbase) -> $BASE" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  $SUDO debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
  $SUDO tar -C "$rootfs" -c . | podman import - "$BASE" >/dev/null
fi
echo "$BASE"

#!/usr/bin/env bash
# Installs Mesa's lavapipe (a Vulkan driver that runs on the CPU) from Debian
# bookworm-backports when no Vulkan driver is present. Idempotent; needs root.
set -euo pipefail

if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  echo "lavapipe already installed"
  exit 0
fi

. /etc/os-release
codename="${VERSION_CODENAME:-bookworm}"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

if [ "$codename" = "bookworm" ]; then
  # bookworm's own Mesa (22.3) has llvmpipe bugs; backports has 25.x.
  uris=$(grep -rhoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/ /etc/apt/sources.list 2>/dev/null \
    | grep -m1 -E 'debian/?$' | awk '{print $2}' || true)
  if [ -z "$uris" ]; then
    echo "no Debian mirror found in /etc/apt sources; add bookworm-backports by hand" >&2
    exit 1
  fi
  $sudo_cmd tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<SRC
Types: deb
URIs: ${uris}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $sudo_cmd apt-get update -q
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t bookworm-backports mesa-vulkan-drivers libvulkan1
else
  $sudo_cmd apt-get update -q
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    mesa-vulkan-drivers libvulkan1
fi
ls /usr/share/vulkan/icd.d/

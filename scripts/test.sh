#!/usr/bin/env bash
# The whole test suite. Installs what the tests need and is missing (nats-server for the
# relay tests, chromium for the panel browser test, from Debian's packages), then runs
# `cargo test`. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v git >/dev/null 2>&1 || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get install -y --no-install-recommends "${need[@]}" \
    || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y --no-install-recommends "${need[@]}"; }
fi
# Debian puts nats-server in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin"

cargo test --all-targets --no-fail-fast "$@"

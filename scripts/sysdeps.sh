#!/usr/bin/env bash
# Installs the system packages the tests and demo use, when they are missing.
# Speech fixtures: espeak-ng, sox. Browser tests: chromium. Console: pulseaudio, libportaudio2.
# Phone: baresip, sip-tester (sipp).
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v chromium >/dev/null || need+=(chromium)
command -v pulseaudio >/dev/null || need+=(pulseaudio pulseaudio-utils libasound2-plugins)
ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || need+=(libportaudio2)
# Phone tests: baresip is the SIP phone, sipp sends malformed calls.
command -v baresip >/dev/null || need+=(baresip)
command -v sipp >/dev/null || need+=(sip-tester)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${need[*]} (install them with your package manager)" >&2
  exit 0
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

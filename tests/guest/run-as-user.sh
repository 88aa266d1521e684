#!/usr/bin/env bash
# Runs a test binary against qemu:///session as a non-root user, with a fresh
# HOME and XDG_RUNTIME_DIR, and stops the session libvirtd (and any guest it
# left) afterwards.
#   as root:     switches to nobody:nogroup with setpriv
#   as non-root: runs as the current user
# Exit 77 (ctest: skipped) when the QEMU/libvirtd packages are missing, unless
# CI=true or VIRTCAP_REQUIRE_GUEST=1, where that is a failure.
set -uo pipefail
binary=$1
shift
missing=""
for tool in qemu-system-x86_64 libvirtd; do
  command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || missing+=" $tool"
done
if [[ -n $missing ]]; then
  msg="real-guest test needs:$missing (scripts/install-deps --runtime-guest)"
  if [[ ${CI:-} == true || ${VIRTCAP_REQUIRE_GUEST:-} == 1 ]]; then
    echo "FAIL: $msg" >&2
    exit 1
  fi
  echo "SKIP: $msg" >&2
  exit 77
fi
home=$(mktemp -d /tmp/virtcap-guest-home-XXXXXX)
chmod 700 "$home"
run=()
if [[ $(id -u) -eq 0 ]]; then
  chown nobody:nogroup "$home"
  run=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi
cleanup() {
  local pidfile=$home/libvirt/libvirtd.pid
  [[ -f $pidfile ]] && kill -9 "$(cat "$pidfile")" 2>/dev/null
  # Guests of this session run under QEMU with the session's paths in argv.
  pkill -9 -f -- "$home" 2>/dev/null
  rm -rf "$home"
}
trap cleanup EXIT
env HOME="$home" XDG_RUNTIME_DIR="$home" PATH="$PATH:/usr/sbin" "${run[@]}" \
  env HOME="$home" XDG_RUNTIME_DIR="$home" "$binary" "$@"

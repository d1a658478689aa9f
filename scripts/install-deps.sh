#!/usr/bin/env bash
# Installs what otel-netreceiver needs on Debian 12 or 13 (run as root):
# the BPF toolchain and libbpf, and the real peers the tests and benchmarks drive.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

runtime=(libbpf1 libelf1 iproute2 ca-certificates)
build=(clang llvm libbpf-dev bpftool make python3-venv)
peers=(iptables dnsmasq-base nginx-light apache2-utils iperf3 wrk dnsperf prometheus libbpf-tools procps)

wanted=("${runtime[@]}" "${build[@]}")
[ "${1:-}" = "--with-test-peers" ] && wanted+=("${peers[@]}")

missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

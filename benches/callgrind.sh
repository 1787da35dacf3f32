#!/usr/bin/env bash
# Instruction counts per operation, bare tokio-rustls + hyper vs tower-mtls, with callgrind:
# deterministic, whatever else the machine is doing. Each server runs alone in a child process
# under valgrind, driven over 127.0.0.1 by the load harness (benches/load.rs, `callgrind`),
# twice (few and more operations) so that start-up cancels out. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind is needed (apt-get install -y valgrind)" >&2
  exit 1
fi
exec cargo bench --all-features --bench load -- callgrind "$@"

# Sourced by the platform-mpi bench scripts: paths, the release build and
# the mpirun command line. Sets root, data, bin, mpi; cds to root.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${CLLM_TEST_DATA:-$root/../shared/data/tinyshakespeare/input.txt}"
cd "$root"
cargo build --release -p cllm-mpi
bin="${CARGO_TARGET_DIR:-$root/target}/release"
mpi=(mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
# A header line for result files: when, how many cores, how loaded.
bench_header() { echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(git rev-parse --short HEAD)"; }

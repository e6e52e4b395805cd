#!/usr/bin/env bash
# MPI tests of cllm-mpi (needs OpenMPI: apt-get install libopenmpi-dev
# openmpi-bin libclang-dev). Run from anywhere; takes about a minute.
#
#  1. unit tests of the crate;
#  2. exact accumulator, 10 steps: the single-machine trainer (`train`),
#     mpirun -np 1, 2 (2 threads per rank), 4, 4 with all-reduce and 3 with
#     all-reduce and 2 threads must write byte-identical model.safetensors
#     and optimizer.safetensors (and a larger model on 2 ranks x 2 threads);
#     train_mpi takes train's flags and runs the same trainer on each rank;
#  3. resume: a checkpoint written by 4 ranks, continued on 3 ranks, ends
#     byte-identical to the uninterrupted run;
#  4. fixed accumulator across rank counts; f32 in the canonical order on
#     1-5 and 13 ranks = the single-machine trainer; f32 in rank order: the
#     thread count and reduction do not change the bits for a rank count;
#  5. a rank that dies (exit(1), then abort()) fails the job with a clear
#     error, within a timeout, and the last checkpoint stays intact; a
#     restart on fewer ranks resumes it to the uninterrupted run's bits;
#  6. bad flags under mpirun: one clear error line, non-zero exit, no hang;
#  7. --overlap (reduction piece by piece while backward runs): exact on 2,
#     3 and 4 ranks and fixed on 2 = the single-machine trainer; with f32
#     a clear error.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
data="${CLLM_TEST_DATA:-$root/../shared/data/tinyshakespeare/input.txt}"
[ -f "$data" ] || { echo "run_tests.sh: no corpus at $data" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "run_tests.sh: mpirun not found (apt-get install openmpi-bin libopenmpi-dev libclang-dev)" >&2; exit 1; }

cd "$root"
cargo build --release -p cllm-mpi
cargo build --release --example train
cargo test --release -p cllm-mpi
bin="${CARGO_TARGET_DIR:-$root/target}/release/train_mpi"
train="${CARGO_TARGET_DIR:-$root/target}/release/examples/train"

mpi=(mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
# Shared memory between ranks on one host; quiet about the missing
# high-speed fabrics a container does not have.
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
# Containers often forbid the cross-process memory access (CMA) vader uses
# for large messages; copy through the shared segment instead.
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
model=(--num-layers 2 --embed-dim 32 --num-heads 2 --seq-len 32 --batch-size 12 --steps 10
  --log-every 5 --eval-windows 8 --keep-checkpoints 10 --sample-tokens 0 --accumulator exact)
fail=0
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fail=1; }

same() { # same DIR_A DIR_B what
  local f
  for f in model.safetensors optimizer.safetensors; do
    if ! cmp -s "$1/$f" "$2/$f"; then bad "$3: $f differs ($1 vs $2)"; return; fi
  done
  ok "$3"
}

run() { # run NAME NP [args...]  (NP 0 = the single-machine `train`)
  local name=$1 np=$2; shift 2
  local cmd=("$train")
  [ "$np" -gt 0 ] && cmd=("${mpi[@]}" -np "$np" "$bin")
  if ! timeout 300 "${cmd[@]}" "$data" "${model[@]}" --out "$tmp/$name" "$@" >"$tmp/$name.log" 2>&1; then
    cat "$tmp/$name.log"
    bad "$name did not finish"
    return 1
  fi
}

echo "== exact accumulator: checkpoints of 1, 2, 4 ranks =="
run ref 0 --save-every 5 || true
for spec in "np1 1" "np2 2 --threads 2" "np4 4" "np4ar 4 --reduce allreduce" "np3t2 3 --threads 2 --reduce allreduce"; do
  set -- $spec
  name=$1 np=$2; shift 2
  run "$name" "$np" --save-every 5 "$@" && same "$tmp/ref/checkpoint-10" "$tmp/$name/checkpoint-10" "exact $name = single process"
done
same "$tmp/ref/checkpoint-5" "$tmp/np4/checkpoint-5" "exact np4 step 5 = single process"

echo "== reduction overlapped with backward =="
# Pieces of 1-3 segments, so that most of them cross while backward runs.
for spec in "ov2 2 --overlap-bucket 2" "ov4ar 4 --reduce allreduce --overlap-bucket 1" "ov3t2 3 --threads 2 --overlap-bucket 3"; do
  set -- $spec
  name=$1 np=$2; shift 2
  run "$name" "$np" --overlap "$@" && same "$tmp/ref/checkpoint-10" "$tmp/$name/checkpoint-10" "exact --overlap $name = single process"
done

# 108k parameters: enough cells that the wire encoders split over threads.
big=(--embed-dim 64 --num-heads 4 --seq-len 64 --batch-size 16 --steps 4)
run bigref 0 "${big[@]}" || true
run bignp2 2 --threads 2 "${big[@]}" && same "$tmp/bigref/checkpoint-4" "$tmp/bignp2/checkpoint-4" "exact np2, threaded wire = single process"

echo "== resume on a different number of ranks =="
run resume3 3 --resume "$tmp/np4/checkpoint-5" && same "$tmp/ref/checkpoint-10" "$tmp/resume3/checkpoint-10" "resume 4 -> 3 ranks"
run resume1 1 --resume "$tmp/np2/checkpoint-5" --reduce allreduce && same "$tmp/ref/checkpoint-10" "$tmp/resume1/checkpoint-10" "resume 2 -> 1 rank"

echo "== fixed and f32 =="
run fix1 0 --accumulator fixed || true
run fix4 4 --accumulator fixed --threads 2 && same "$tmp/fix1/checkpoint-10" "$tmp/fix4/checkpoint-10" "fixed np4 = single process"
run fix2ov 2 --accumulator fixed --overlap --overlap-bucket 1 && same "$tmp/fix1/checkpoint-10" "$tmp/fix2ov/checkpoint-10" "fixed --overlap np2 = single process"
run f32ref 0 --accumulator f32 --threads 2 || true
run f32np1 1 --accumulator f32 --threads 2 && same "$tmp/f32ref/checkpoint-10" "$tmp/f32np1/checkpoint-10" "f32 one rank = single process"
for spec in "f32np2 2 --threads 2" "f32np3 3" "f32np4ar 4 --reduce allreduce" "f32np5 5"; do
  set -- $spec
  name=$1 np=$2; shift 2
  run "$name" "$np" --accumulator f32 "$@" && same "$tmp/f32ref/checkpoint-10" "$tmp/$name/checkpoint-10" "f32 (canonical order) $name = single process"
done
run f32deep 0 --accumulator f32 --batch-size 16 --steps 4 || true
run f32deep13 13 --accumulator f32 --batch-size 16 --steps 4 && same "$tmp/f32deep/checkpoint-4" "$tmp/f32deep13/checkpoint-4" "f32 (canonical order) depth 2 on 13 ranks = single process"
run f32a 3 --accumulator f32 --f32-order rank || true
run f32b 3 --accumulator f32 --f32-order rank --threads 2 --reduce allreduce && same "$tmp/f32a/checkpoint-10" "$tmp/f32b/checkpoint-10" "f32 rank order, three ranks: threads and reduction do not change the bits"

echo "== a rank dies =="
for how in "2:7" "1:7:abort"; do
  name="die-${how//:/-}"
  start=$SECONDS
  set +e
  CLLM_MPI_FAIL="$how" timeout 120 "${mpi[@]}" -np 4 "$bin" "$data" "${model[@]}" --save-every 5 --out "$tmp/$name" >"$tmp/$name.log" 2>&1
  rc=$?
  set -e
  if [ "$rc" = 124 ]; then bad "$how: the job hung (killed after 120 s)"; continue; fi
  if [ "$rc" = 0 ]; then bad "$how: the job succeeded although a rank died"; continue; fi
  if ! grep -q "CLLM_MPI_FAIL: dying at step 7" "$tmp/$name.log"; then cat "$tmp/$name.log"; bad "$how: no message from the dying rank"; continue; fi
  if ! grep -Eq "exited|aborted|terminated|signal" "$tmp/$name.log"; then cat "$tmp/$name.log"; bad "$how: mpirun did not report the failure"; continue; fi
  ok "$how: job failed with exit code $rc after $((SECONDS - start)) s"
  [ -d "$tmp/$name/checkpoint-10" ] && bad "$how: a final checkpoint appeared"
  same "$tmp/ref/checkpoint-5" "$tmp/$name/checkpoint-5" "$how: last checkpoint intact"
done
# The killed 4-rank job restarts on 3 ranks from its last checkpoint.
run die-restart 3 --resume "$tmp/die-2-7" && same "$tmp/ref/checkpoint-10" "$tmp/die-restart/checkpoint-10" "killed at step 7 on 4 ranks, resumed on 3 = uninterrupted"

echo "== bad input under mpirun =="
set +e
timeout 120 "${mpi[@]}" -np 2 "$bin" "$data" "${model[@]}" --num-heads 3 --out "$tmp/badheads" >"$tmp/bad.log" 2>&1
rc=$?
set -e
n=$(grep -c "error:" "$tmp/bad.log" || true)
if [ "$rc" = 124 ]; then bad "bad flags: the job hung"
elif [ "$rc" = 0 ]; then bad "bad flags: the job succeeded"
elif [ "$n" != 1 ] || grep -q "panicked" "$tmp/bad.log"; then cat "$tmp/bad.log"; bad "bad flags: expected one error line"
else ok "bad flags: one error line, exit code $rc ($(grep "error:" "$tmp/bad.log"))"; fi
set +e
timeout 120 "${mpi[@]}" -np 2 "$bin" "$data" "${model[@]}" --accumulator f32 --overlap --out "$tmp/badov" >"$tmp/badov.log" 2>&1
rc=$?
set -e
if [ "$rc" = 124 ]; then bad "f32 --overlap: the job hung"
elif [ "$rc" = 0 ]; then bad "f32 --overlap: the job succeeded"
elif ! grep -q "overlap needs the fixed or exact accumulator" "$tmp/badov.log" || grep -q "panicked" "$tmp/badov.log"; then cat "$tmp/badov.log"; bad "f32 --overlap: no clear error"
else ok "f32 --overlap: clear error, exit code $rc"; fi

if [ "$fail" != 0 ]; then
  echo "run_tests.sh: FAILED"
  exit 1
fi
echo "run_tests.sh: all passed"

#!/bin/sh
# Runs one libFuzzer harness for a bounded number of runs from its seeds:
#   run.sh FUZZER SEED_DIR WORK_DIR RUNS [libFuzzer options...]
# The seeds are only read: new inputs go to WORK_DIR/corpus (emptied first, so
# that every run starts from the seeds alone), crashes to WORK_DIR/.
set -eu
fuzzer=$1 seeds=$2 work=$3 runs=$4
shift 4
rm -rf "$work/corpus"
mkdir -p "$work/corpus"
exec "$fuzzer" -runs="$runs" -timeout=30 -print_final_stats=1 -artifact_prefix="$work/" \
	"$@" "$work/corpus" "$seeds"

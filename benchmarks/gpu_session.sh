#!/usr/bin/env bash
# The GPU benchmarks as one prepared command, for a session that is lent an accelerator for a
# few minutes: every stage writes its JSON and its log under $OUT as soon as it ends, so a
# stage cut short by its time limit loses only itself.
#
#   bash benchmarks/gpu_session.sh suite     # the GPU suite (issue 16): LM MFU, ResNet-50, LSTM, Adam, compile
#   bash benchmarks/gpu_session.sh steps     # the train-step, Transformer, recurrent and optimizer cases,
#                                            # float32 then bfloat16 (--quick budgets)
#   TOY=1 OUT=/tmp/out bash benchmarks/gpu_session.sh suite    # the same plumbing at toy sizes, on a CPU
#
# It runs from the repository root without installing jdl (PYTHONPATH), with the machine's own
# jax, flax and optax, and prints the device first: a record says where it was measured.
# Copy the JSONs into benchmarks/results/ named after the device (gpu_h200_suite.json, ...).
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-}
case "$stage" in
    suite|steps) ;;
    *) echo "usage: gpu_session.sh suite|steps (got '$stage')" >&2; exit 2 ;;
esac
out=${OUT:?set OUT to the folder for the results}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
toy=${TOY:-}
status=0

"$python" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
                                             jax.default_backend(), jax.devices())" 2>&1 | tee "$out/devices.log" || exit 1

run() {  # run NAME SECONDS ARGS...: one benchmark command, its log and exit status kept
    local name=$1 seconds=$2
    shift 2
    echo "== $name (at most $seconds s)"
    timeout "$seconds" "$python" -m "$@" 2>&1 | tee "$out/$name.log"
    local code=$?
    [ "$code" -eq 0 ] || { echo "== $name ended with status $code"; status=1; }
}

case "$stage" in
    suite)
        run gpu_suite "${SUITE_SECONDS:-480}" benchmarks.run --suite gpu ${toy:+--toy} --json "$out/gpu_suite.json"
        ;;
    steps)
        cases="train_steps recurrent adam_update adamw_update sgd_update"
        [ -z "$toy" ] || cases="mlp_train_step lstm_t50 adam_update"
        for dtype in float32 bfloat16; do
            # shellcheck disable=SC2086  # the case names are separate arguments
            run "steps_$dtype" "${STEPS_SECONDS:-240}" benchmarks.run --quick --dtype "$dtype" --only $cases \
                --json "$out/steps_$dtype.json"
        done
        ;;
esac
exit "$status"

#!/usr/bin/env bash
# The GPU benchmarks as one prepared command, for a session that is lent an accelerator for a
# few minutes: every stage writes its JSON and its log under $OUT as soon as it ends, so a
# stage cut short by its time limit loses only itself.
#
#   bash benchmarks/gpu_session.sh suite     # the GPU suite (issue 16): LM MFU, ResNet-50, LSTM, Adam, compile
#   bash benchmarks/gpu_session.sh steps     # the train-step (Transformer included), recurrent and optimizer
#                                            # cases, float32 then bfloat16 (--quick budgets)
#
# A session has 15 minutes of device time, the machine's start included, and one command may run
# 10: run one stage per call (suite first: it is issue 16's), with limits that leave room.
#   TOY=1 OUT=/tmp/out bash benchmarks/gpu_session.sh suite    # the same plumbing at toy sizes, on a CPU
#
# It runs from the repository root without installing jdl (PYTHONPATH), with the machine's own
# jax, flax and optax, and prints the device first: a record says where it was measured. $OUT
# gets the stage's log and its JSONs (the suite: 2 files; steps: 7).
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
log="$out/$stage.log"  # one log per stage: the device tool brings back at most 8 files

"$python" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
                                             jax.default_backend(), jax.devices())" 2>&1 | tee "$log" || exit 1

run() {  # run NAME SECONDS ARGS...: one benchmark command, its log and exit status kept
    local name=$1 seconds=$2
    shift 2
    echo "== $name (at most $seconds s)" | tee -a "$log"
    timeout "$seconds" "$python" -m "$@" 2>&1 | tee -a "$log"
    local code=$?
    [ "$code" -eq 0 ] || { echo "== $name ended with status $code" | tee -a "$log"; status=1; }
}

case "$stage" in
    suite)
        run gpu_suite "${SUITE_SECONDS:-480}" benchmarks.run --suite gpu ${toy:+--toy} --json "$out/gpu_suite.json"
        ;;
    steps)
        # One command per group and dtype, each with its own JSON: a group cut short by its limit
        # loses only itself. Limits in seconds: STEPS_SECONDS, RECURRENT_SECONDS, OPTIM_SECONDS,
        # by default 120 + 75 + 45 per dtype, 480 in all.
        declare -A cases=([steps]="train_steps" [recurrent]="lstm_t200 gru_t200"
                          [optim]="adam_update adamw_update sgd_update")
        declare -A limit=([steps]=${STEPS_SECONDS:-120} [recurrent]=${RECURRENT_SECONDS:-75}
                          [optim]=${OPTIM_SECONDS:-45})
        [ -z "$toy" ] || cases=([steps]="mlp_train_step" [recurrent]="lstm_t50" [optim]="adam_update")
        for dtype in float32 bfloat16; do
            for group in steps recurrent optim; do
                # shellcheck disable=SC2086  # the case names are separate arguments
                run "${group}_$dtype" "${limit[$group]}" benchmarks.run --quick --dtype "$dtype" \
                    --only ${cases[$group]} --json "$out/${group}_$dtype.json"
            done
        done
        ;;
esac
exit "$status"

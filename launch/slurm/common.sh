# shellcheck shell=bash
# Shared by the sbatch scripts in this folder (sourced, not run). Starts ranks inside an allocation in one
# of two ways, checks the allocation first, and requeues a preempted job.
#
#   srun       one task per GPU (or per CPU rank): srun sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID and
#              parallel/launch_env.py turns them into RANK/WORLD_SIZE/LOCAL_RANK, MASTER_ADDR = the first host
#              of SLURM_JOB_NODELIST (scontrol show hostnames), MASTER_PORT derived from the job id.
#   deepspeed  one task per node running the deepspeed launcher (--no_ssh, --node_rank=SLURM_NODEID) with a
#              hostfile generated from the allocation (launch/slurm/hostfile.py); it starts the node's ranks.
#
# Either way the ranks per node are the job's tasks per node (sbatch --ntasks-per-node), which on GPU nodes
# must equal the GPUs per node. Without GPUs (no --gpus-per-node) the job runs in CPU mode: DeepSpeed's CPU
# accelerator and gloo, OMP_NUM_THREADS = cpus per task.
#
# Exit codes: 2 for an unusable allocation (one line saying why); launch/pretrain.py's codes otherwise,
# where 75 (EX_TEMPFAIL, sysexits.h) means "preempted, checkpoint saved": the job then requeues itself.

EXIT_PREEMPTED=75

llmf_die() { echo "error: $*" >&2; exit 2; }

llmf_log() { echo "[$(date +%H:%M:%S) job ${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-?}}${SLURM_ARRAY_TASK_ID:+[$SLURM_ARRAY_TASK_ID]}] $*"; }

# GPUs per node of this allocation: SLURM_GPUS_ON_NODE (set by slurmd) or --gpus-per-node ("h100:8" -> 8).
llmf_gpus_per_node() {
    local g=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-0}}
    g=${g##*:}
    [[ $g =~ ^[0-9]+$ ]] || llmf_die "cannot read the GPUs per node from SLURM_GPUS_ON_NODE/SLURM_GPUS_PER_NODE ($g)"
    echo "$g"
}

# Tasks per node: SLURM_NTASKS_PER_NODE, else SLURM_TASKS_PER_NODE if uniform ("4(x2)" -> 4).
llmf_tasks_per_node() {
    if [[ -n ${SLURM_NTASKS_PER_NODE:-} ]]; then echo "$SLURM_NTASKS_PER_NODE"; return; fi
    local t=${SLURM_TASKS_PER_NODE:?not inside a SLURM allocation}
    local uniq
    uniq=$(tr ',' '\n' <<<"$t" | sed 's/(x[0-9]*)//' | sort -u)
    [[ $uniq =~ ^[0-9]+$ ]] || llmf_die "tasks per node differ between nodes (SLURM_TASKS_PER_NODE=$t): " \
        "submit with --ntasks-per-node"
    echo "$uniq"
}

# Check the allocation and set LLMF_* for llmf_run. $1: srun|deepspeed.
llmf_setup() {
    LLMF_LAUNCHER=$1
    [[ $LLMF_LAUNCHER == srun || $LLMF_LAUNCHER == deepspeed ]] ||
        llmf_die "--launcher must be srun or deepspeed, not '$LLMF_LAUNCHER'"
    [[ -n ${SLURM_JOB_ID:-} && -n ${SLURM_JOB_NODELIST:-} ]] || llmf_die "not inside a SLURM job (submit with sbatch)"
    export PYTHON=${PYTHON:-python3} LLMF_ROOT
    LLMF_NODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    LLMF_GPUS=$(llmf_gpus_per_node)
    LLMF_PER_NODE=$(llmf_tasks_per_node)
    if ((LLMF_GPUS > 0)); then
        ((LLMF_PER_NODE == LLMF_GPUS)) || llmf_die "$LLMF_PER_NODE tasks per node but $LLMF_GPUS GPUs per node:" \
            "submit with --ntasks-per-node equal to --gpus-per-node (one rank per GPU)"
        LLMF_DEVICE="$LLMF_GPUS GPU(s)"
    else
        export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
        LLMF_DEVICE="CPU (no GPUs allocated: DeepSpeed CPU accelerator, gloo)"
    fi
    LLMF_MASTER=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    [[ -n $LLMF_MASTER ]] || llmf_die "SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST expands to no host"
    getent hosts "$LLMF_MASTER" >/dev/null ||
        llmf_die "master host $LLMF_MASTER (first of SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST) does not resolve"
    # Same rule as parallel/launch_env.py, so both modes rendezvous on the same port for a given job.
    export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
    LLMF_PORT=$MASTER_PORT
    llmf_log "$LLMF_NODES node(s) [$SLURM_JOB_NODELIST] x $LLMF_PER_NODE rank(s), $LLMF_DEVICE;" \
        "launcher $LLMF_LAUNCHER; master $LLMF_MASTER:$LLMF_PORT; restart ${SLURM_RESTART_COUNT:-0}"
}

# Start the ranks of SCRIPT ARGS... on every node and wait; returns their exit status. Signals the batch
# shell receives (sbatch --signal=B:USR1@T, scancel --batch) are passed on to the ranks.
llmf_run() {
    local step_pid rc
    if [[ $LLMF_LAUNCHER == srun ]]; then
        # One line per task naming its node, before the ranks print their own start-up line.
        srun --kill-on-bad-exit=0 bash -c \
            'echo "slurm task $SLURM_PROCID/$SLURM_NTASKS on $SLURMD_NODENAME, local id $SLURM_LOCALID"; exec "$@"' \
            _ "$PYTHON" -u "$@" &
    else
        # Each node writes its own copy of the hostfile (no shared filesystem assumed); the launcher reads it
        # only to learn every node's slot count and this node's place (--node_rank) among them.
        # USR1 is ignored by the wrapper and the launcher processes (its default action would kill them) and is
        # caught by the ranks, whose handler replaces the inherited "ignore".
        srun --kill-on-bad-exit=0 --ntasks="$LLMF_NODES" --ntasks-per-node=1 bash -c 'trap "" USR1
            hostfile=${TMPDIR:-/tmp}/llmf-hostfile.$SLURM_JOB_ID.$SLURM_NODEID
            "$PYTHON" "$LLMF_ROOT/launch/slurm/hostfile.py" --slots "$0" >"$hostfile" || exit 2
            echo "slurm task $SLURM_PROCID on $SLURMD_NODENAME: deepspeed launcher, node rank $SLURM_NODEID"
            deepspeed --hostfile "$hostfile" --no_ssh --node_rank "$SLURM_NODEID" --master_addr "$1" \
                --master_port "$2" "${@:3}" && rc=0 || rc=$?
            rm -f "$hostfile"
            exit $rc' "$LLMF_PER_NODE" "$LLMF_MASTER" "$LLMF_PORT" "$@" &
    fi
    step_pid=$!
    trap 'llmf_log "batch shell got USR1: passing it to the ranks"; kill -USR1 $step_pid 2>/dev/null' USR1
    trap 'llmf_log "batch shell got TERM: waiting for the ranks to save"' TERM
    while :; do
        wait "$step_pid" && rc=0 || rc=$?
        kill -0 "$step_pid" 2>/dev/null || break  # wait returned for a trapped signal: keep waiting
    done
    trap - USR1 TERM
    return "$rc"
}

# $1: the ranks' exit status. A preempted run (checkpoint saved) requeues this job, which resumes from it;
# LLMF_MAX_RESTARTS (default 20) bounds the loop.
llmf_finish() {
    local rc=$1
    if ((rc == EXIT_PREEMPTED)); then
        if ((${SLURM_RESTART_COUNT:-0} >= ${LLMF_MAX_RESTARTS:-20})); then
            llmf_log "preempted, but already restarted ${SLURM_RESTART_COUNT} times: not requeueing"
            exit "$rc"
        fi
        llmf_log "preempted: checkpoint saved, requeueing job $SLURM_JOB_ID (it resumes from the checkpoint)"
        scontrol requeue "$SLURM_JOB_ID" || llmf_log "scontrol requeue failed (job cancelled or not requeueable)"
        exit 0
    fi
    llmf_log "ranks exited with status $rc"
    exit "$rc"
}

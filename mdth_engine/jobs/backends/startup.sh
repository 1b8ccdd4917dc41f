#!/bin/bash
# mdth shard worker: the startup script of a Compute Engine VM launched by `mdth ... --shards N --backend gce`.
#
# 1. reads its job, shard and lake from instance metadata (no secret is ever in metadata);
# 2. reads the Tardis key from Secret Manager with the VM's service account, by the secret *name* in metadata,
#    and keeps it in the worker's environment only;
# 3. runs `mdth worker --job J --shard I --lake L` from a preinstalled interpreter, the worker image, or a
#    pip-installed venv;
# 4. deletes its own VM when the shard ends, whatever the outcome (the lake holds the results and the log).
#
# Never add `set -x` here: the key passes through this shell's variables.
set -uo pipefail

METADATA="${MDTH_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}"
COMPUTE_API="${MDTH_COMPUTE_API:-https://compute.googleapis.com/compute/v1}"
SECRETS_API="${MDTH_SECRETMANAGER_API:-https://secretmanager.googleapis.com/v1}"
LOG_DIR="${MDTH_LOG_DIR:-/var/log/mdth}"
VENV="${MDTH_VENV:-/opt/mdth}"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) mdth-startup: $*"; }
md() { curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' "$METADATA/$1"; }
attr() { curl -fsS -H 'Metadata-Flavor: Google' "$METADATA/instance/attributes/$1" 2>/dev/null || true; }
json_get() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
token() { md instance/service-accounts/default/token | json_get access_token; }

NAME="$(md instance/name)"
ZONE="$(md instance/zone)"
ZONE="${ZONE##*/}"
PROJECT="$(md project/project-id)"
JOB="$(attr mdth-job)"
SHARD="$(attr mdth-shard)"
LAKE="$(attr mdth-lake)"

self_delete() {
    local rc="$1"
    log "shard ${SHARD:-?} of ${JOB:-?} ended (exit ${rc}); deleting this VM (${NAME})"
    for attempt in 1 2 3 4 5; do
        if curl -fsS -o /dev/null -X DELETE -H "Authorization: Bearer $(token)" \
            "${COMPUTE_API}/projects/${PROJECT}/zones/${ZONE}/instances/${NAME}"; then
            return 0
        fi
        sleep $((attempt * 5))
    done
    log "could not delete this VM (does its service account have compute.instances.delete?);" \
        "\`mdth jobs cleanup ${JOB:-JOB}\` deletes it"
    if [ -z "${MDTH_NO_SHUTDOWN:-}" ]; then
        shutdown -h now || true  # a stopped VM no longer bills for its cores
    fi
}
trap 'self_delete $?' EXIT

if [ -z "$JOB" ] || [ -z "$SHARD" ] || [ -z "$LAKE" ]; then
    log "metadata lacks mdth-job, mdth-shard or mdth-lake: not an mdth worker VM"
    exit 2
fi

mkdir -p "$LOG_DIR"
WORKER_LOG="${LOG_DIR}/worker-${SHARD}.log"
export MDTH_VM_NAME="$NAME" MDTH_WORKER_LOG="$WORKER_LOG" PYTHONUNBUFFERED=1
GCP_PROJECT_ATTR="$(attr mdth-project)"
if [ -n "$GCP_PROJECT_ATTR" ]; then
    export MDTH_GCP_PROJECT="$GCP_PROJECT_ATTR"
fi

# The Tardis key: Secret Manager -> this process' environment -> the worker. Never echoed, never on disk.
SECRET="$(attr mdth-tardis-key-secret)"
if [ -n "$SECRET" ]; then
    case "$SECRET" in projects/*) ;; *) SECRET="projects/${PROJECT}/secrets/${SECRET}" ;; esac
    case "$SECRET" in */versions/*) ;; *) SECRET="${SECRET}/versions/latest" ;; esac
    if ACCESS="$(curl -fsS -H "Authorization: Bearer $(token)" "${SECRETS_API}/${SECRET}:access")"; then
        MDTH_TARDIS_API_KEY="$(printf '%s' "$ACCESS" | python3 -c \
            'import base64, json, sys; print(base64.b64decode(json.load(sys.stdin)["payload"]["data"]).decode().strip())')"
        export MDTH_TARDIS_API_KEY
        unset ACCESS
        log "Tardis key read from Secret Manager (${SECRET%/versions/*})"
    else
        log "cannot read ${SECRET} from Secret Manager (grant the VM's service account" \
            "roles/secretmanager.secretAccessor on it); running without a key"
    fi
fi

ARGS=(worker --job "$JOB" --shard "$SHARD" --lake "$LAKE")
IMAGE="$(attr mdth-worker-image)"
log "running shard ${SHARD} of ${JOB} on ${NAME} (lake ${LAKE})"

if [ -n "${MDTH_WORKER_PYTHON:-}" ]; then
    # an interpreter with mdth already installed (custom images, and the test stand-in)
    "$MDTH_WORKER_PYTHON" -m mdth_engine.cli "${ARGS[@]}" >>"$WORKER_LOG" 2>&1
    rc=$?
elif [ -n "$IMAGE" ]; then
    if ! command -v docker >/dev/null; then
        apt-get update -qq && apt-get install -y -qq docker.io >/dev/null
    fi
    REGISTRY="${IMAGE%%/*}"
    case "$REGISTRY" in
        *.pkg.dev | gcr.io | *.gcr.io)
            token | docker login -u oauth2accesstoken --password-stdin "https://${REGISTRY}" >/dev/null ;;
    esac
    docker pull -q "$IMAGE" >/dev/null
    docker run --rm --network host \
        -e MDTH_TARDIS_API_KEY -e MDTH_VM_NAME -e MDTH_GCP_PROJECT -e PYTHONUNBUFFERED \
        -e MDTH_WORKER_LOG="/logs/worker-${SHARD}.log" -v "${LOG_DIR}:/logs" \
        "$IMAGE" "${ARGS[@]}" >>"$WORKER_LOG" 2>&1
    rc=$?
else
    PIP_SPEC="$(attr mdth-pip-spec)"
    PIP_SPEC="${PIP_SPEC:-mdth[gcp]}"
    if [ ! -x "${VENV}/bin/mdth" ]; then
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null
        fi
        case "$PIP_SPEC" in
            gs://*)  # a wheel in a bucket: copy it with the VM's credentials first
                WHEEL="/tmp/$(basename "${PIP_SPEC%%\[*}")"
                gcloud storage cp "${PIP_SPEC%%\[*}" "$WHEEL" && PIP_SPEC="${WHEEL}[gcp]" ;;
        esac
        python3 -m venv "$VENV" && "${VENV}/bin/pip" install -q "$PIP_SPEC" >>"$WORKER_LOG" 2>&1
    fi
    "${VENV}/bin/mdth" "${ARGS[@]}" >>"$WORKER_LOG" 2>&1
    rc=$?
fi

if [ "$rc" -ne 0 ] && [ ! -s "$WORKER_LOG" ]; then
    log "the worker did not start"
fi
case "$LAKE" in
    gs://*)  # the worker uploads its log itself; this catches a worker that never started
        command -v gcloud >/dev/null && gcloud storage cp -q "$WORKER_LOG" \
            "${LAKE%/}/_jobs/${JOB}/logs/${SHARD}.boot.log" >/dev/null 2>&1 || true ;;
esac
log "worker exited with ${rc}"
exit "$rc"

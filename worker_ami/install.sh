#!/bin/bash
# Installs and starts the infaas worker agent on a fresh worker machine.
#
# Run as root by the launch template's user data, from the unpacked bundle
# (build/worker/<hardware>/ made by worker_ami/build_bundle.py), after the user
# data wrote /etc/infaas/worker.env. Needs no internet access: Python packages
# come from the bundle's wheelhouse; the CPU image's python3.12 comes from the
# Amazon Linux repositories, which are in S3 (reached through the VPC's S3
# gateway endpoint).
#
#   cpu         Amazon Linux 2023                      python3.12 + onnxruntime (CPU)
#   gpu         DLAMI Base OSS Nvidia Driver (AL2023)  python3.12 + onnxruntime-gpu (CUDA 12, cuDNN from the image)
#   inferentia  DLAMI Neuron (Ubuntu 24.04)            the image's Neuron PyTorch venv (torch-neuronx from the
#                                                      Neuron repository, preinstalled) + infaas
#
# Its output goes to /var/log/infaas-install.log and, at the end, to the worker log group
# (INFAAS_LOG_GROUP, stream <instance id>/install). If any step fails, the failing line is
# logged, the log is shipped, and the instance marks itself unhealthy (SetInstanceHealth), so its
# group replaces it at once instead of keeping a billed machine that never serves.
#
# INFAAS_ROOT (empty on a machine) prefixes every path written: the tests run this script
# against stubbed commands in a folder of their own.
set -euo pipefail
HW="${1:?usage: install.sh cpu|gpu|inferentia}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="${INFAAS_ROOT:-}"
ENV_FILE="$ROOT/etc/infaas/worker.env"
LOG="$ROOT/var/log/infaas-install.log"
WHEELS="$HERE/wheelhouse"
mkdir -p "$(dirname "$LOG")"
exec >>"$LOG" 2>&1  # (the user data prints its tail to the console if the install fails)

envget() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1; }
REGION="$(envget AWS_REGION)"
GROUP="$(envget INFAAS_GROUP)"
LOG_GROUP="$(envget INFAAS_LOG_GROUP)"

# What only this machine knows, from the instance metadata service (IMDSv2).
TOKEN="$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')"
md() { curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" "http://169.254.169.254/latest/meta-data/$1"; }
INSTANCE_ID="$(md instance-id)"

ship_log() {  # the install log to CloudWatch Logs (best effort: the instance's console output has it too)
  [ -n "$LOG_GROUP" ] || return 0
  local stream="$INSTANCE_ID/install" events="$ROOT/var/log/infaas-install.events.json"
  python3 - "$LOG" "$events" <<'PY' || return 0
import json, sys, time
lines = open(sys.argv[1], errors="replace").read().splitlines()[-2000:] or ["(empty)"]
now = int(time.time() * 1000)
json.dump([{"timestamp": now, "message": line[:200000] or " "} for line in lines], open(sys.argv[2], "w"))
PY
  aws logs create-log-stream --region "$REGION" --log-group-name "$LOG_GROUP" --log-stream-name "$stream" || true
  aws logs put-log-events --region "$REGION" --log-group-name "$LOG_GROUP" --log-stream-name "$stream" \
    --log-events "file://$events" || true
}

failed() {
  local rc=$? line=$1 cmd=$2
  trap - ERR
  echo "infaas install FAILED (exit $rc) at install.sh line $line: $cmd"
  ship_log
  # the group replaces this machine now (the drain hook lets it go; nothing runs here to drain)
  aws autoscaling set-instance-health --region "$REGION" --instance-id "$INSTANCE_ID" \
    --health-status Unhealthy --no-should-respect-grace-period || true
  exit "$rc"
}
trap 'failed $LINENO "$BASH_COMMAND"' ERR

echo "infaas install: $HW worker, instance $INSTANCE_ID, group $GROUP"
[ -d "$WHEELS" ] || { echo "no wheelhouse in $HERE: build the bundle with worker_ami/build_bundle.py"; false; }

case "$HW" in
  cpu)
    command -v python3.12 >/dev/null || dnf install -y python3.12
    VENV="$ROOT/opt/infaas/venv"
    python3.12 -m venv "$VENV"
    ;;
  gpu)
    VENV="$ROOT/opt/infaas/venv"
    python3.12 -m venv "$VENV"
    ;;
  inferentia)
    # The Neuron DLAMI ships torch-neuronx in a venv per framework version; use the newest,
    # so `import torch_neuronx` works in the worker (torch-neuronx on PyPI is a placeholder).
    VENV="$(ls -d "$ROOT"/opt/aws_neuronx_venv_pytorch_* | sort -V | tail -n 1)"
    ;;
  *) echo "unknown hardware type $HW"; false ;;
esac

if [ "$HW" = inferentia ]; then
  # The Neuron venv's packages (torch, torch-neuronx, neuronx-cc and what they pin) stay as they are: each
  # is a constraint, so an install that would change one fails here, visibly, instead of breaking the compiler.
  "$VENV/bin/pip" freeze --exclude-editable > "$HERE/neuron-constraints.txt"
  "$VENV/bin/pip" install --no-index --find-links "$WHEELS" -c "$HERE/neuron-constraints.txt" "infaas[aws]"
  "$VENV/bin/pip" install --no-index --find-links "$WHEELS" --no-deps "onnx2torch>=1.5.15"
else
  "$VENV/bin/pip" install --no-index --find-links "$WHEELS" "infaas[aws]"
fi
if [ "$HW" = gpu ]; then
  # onnxruntime and onnxruntime-gpu provide the same module and must not be installed together.
  "$VENV/bin/pip" uninstall -y onnxruntime
  "$VENV/bin/pip" install --no-index --find-links "$WHEELS" "onnxruntime-gpu[cuda,cudnn]" "tensorrt-cu12-libs>=10,<11"
  # CUDA 12 and cuDNN 9 from their pip packages (the image's own CUDA may be a newer major), and TensorRT's
  # libnvinfer: every one of their library folders on the worker's library path.
  LIBS="$("$VENV/bin/python" -c 'import glob, os, site, tensorrt_libs
dirs = sorted(glob.glob(os.path.join(site.getsitepackages()[0], "nvidia", "*", "lib")))
print(":".join(dirs + [os.path.dirname(tensorrt_libs.__file__)]))')"
  echo "LD_LIBRARY_PATH=$LIBS" >> "$ENV_FILE"
fi

id infaas >/dev/null 2>&1 || useradd --system --home-dir /var/lib/infaas --shell /usr/sbin/nologin infaas
if [ "$HW" = inferentia ] && getent group neuron >/dev/null; then usermod -a -G neuron infaas; fi
mkdir -p "$ROOT/var/lib/infaas" "$ROOT/var/cache/infaas"
chown infaas:infaas "$ROOT/var/lib/infaas" "$ROOT/var/cache/infaas"

{
  echo "INFAAS_HOST=$(md local-ipv4)"        # the address the selector reaches, and the worker binds
  echo "INFAAS_WORKER_ID=$INSTANCE_ID"       # worker id = instance id: the autoscaler drains by it
} >> "$ENV_FILE"
chmod 0644 "$ENV_FILE"

mkdir -p "$ROOT/etc/systemd/system"
for unit in infaas-worker infaas-drain infaas-logs; do
  sed "s#@VENV@#$VENV#g" "$HERE/systemd/$unit.service" > "$ROOT/etc/systemd/system/$unit.service"
done
systemctl daemon-reload
systemctl enable --now infaas-worker.service infaas-drain.service infaas-logs.service
echo "infaas install: done; the worker heartbeats within seconds"
ship_log

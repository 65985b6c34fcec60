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
set -euo pipefail
HW="${1:?usage: install.sh cpu|gpu|inferentia}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ENV_FILE=/etc/infaas/worker.env
WHEELS="$HERE/wheelhouse"
[ -d "$WHEELS" ] || { echo "no wheelhouse in $HERE: build the bundle with worker_ami/build_bundle.py" >&2; exit 1; }

case "$HW" in
  cpu)
    command -v python3.12 >/dev/null || dnf install -y python3.12
    VENV=/opt/infaas/venv
    python3.12 -m venv "$VENV"
    ;;
  gpu)
    VENV=/opt/infaas/venv
    python3.12 -m venv "$VENV"
    ;;
  inferentia)
    # The Neuron DLAMI ships torch-neuronx in a venv per framework version; use the newest,
    # so `import torch_neuronx` works in the worker (torch-neuronx on PyPI is a placeholder).
    VENV="$(ls -d /opt/aws_neuronx_venv_pytorch_* | sort -V | tail -n 1)"
    ;;
  *) echo "unknown hardware type $HW" >&2; exit 1 ;;
esac

EXTRAS=aws
[ "$HW" = inferentia ] && EXTRAS=aws,inferentia
"$VENV/bin/pip" install --no-index --find-links "$WHEELS" "infaas[$EXTRAS]"
if [ "$HW" = gpu ]; then
  # onnxruntime and onnxruntime-gpu provide the same module and must not be installed together.
  "$VENV/bin/pip" uninstall -y onnxruntime
  "$VENV/bin/pip" install --no-index --find-links "$WHEELS" onnxruntime-gpu "tensorrt-cu12-libs>=10,<11"
  # The TensorRT provider loads libnvinfer from the pip package's folder.
  TRT_LIBS="$("$VENV/bin/python" -c 'import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))')"
  echo "LD_LIBRARY_PATH=$TRT_LIBS" >> "$ENV_FILE"
fi

id infaas >/dev/null 2>&1 || useradd --system --home-dir /var/lib/infaas --shell /usr/sbin/nologin infaas
[ "$HW" = inferentia ] && getent group neuron >/dev/null && usermod -a -G neuron infaas
mkdir -p /var/lib/infaas /var/cache/infaas
chown infaas:infaas /var/lib/infaas /var/cache/infaas

# What only this machine knows, from the instance metadata service (IMDSv2).
TOKEN="$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')"
md() { curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" "http://169.254.169.254/latest/meta-data/$1"; }
{
  echo "INFAAS_HOST=$(md local-ipv4)"        # the address the selector reaches, and the worker binds
  echo "INFAAS_WORKER_ID=$(md instance-id)"  # worker id = instance id: the autoscaler drains by it
} >> "$ENV_FILE"
chmod 0644 "$ENV_FILE"

for unit in infaas-worker infaas-drain; do
  sed "s#@VENV@#$VENV#g" "$HERE/systemd/$unit.service" > "/etc/systemd/system/$unit.service"
done
systemctl daemon-reload
systemctl enable --now infaas-worker.service infaas-drain.service

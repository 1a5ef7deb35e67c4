#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install genstudio into it.
#
# The one subtle step is torch: an unpinned `pip install torch` on Linux pulls the CUDA build
# (several GB). So torch is installed first, explicitly:
#   * a machine with an NVIDIA GPU (nvidia-smi answers) gets the default, CUDA-enabled wheel;
#   * any other machine gets the CPU-only wheel (torch==$TORCH_VERSION+cpu), taken from pip's
#     configured sources if they have it, else from the PyTorch CPU wheel index.
# Once torch is present, the package's own `torch>=2.3` requirement installs nothing more.
# Set GENSTUDIO_TORCH=cpu|cuda to override the detection.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GENSTUDIO_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
TORCH_VERSION="${GENSTUDIO_TORCH_VERSION:-2.13.0}"
stamp="$venv/.genstudio-installed"

# Re-install only when the project's requirements changed since the last set-up.
want="$(cat "$here/pyproject.toml" "$0" | sha256sum | cut -c1-16)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi

echo "genstudio: setting up the environment in $venv (first use only)…" >&2
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

flavour="${GENSTUDIO_TORCH:-}"
if [[ -z "$flavour" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        flavour=cuda
    else
        flavour=cpu
    fi
fi

if "$venv/bin/python" -c "import sys, torch; v = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 3))" 2>/dev/null; then
    echo "genstudio: torch already installed ($("$venv/bin/python" -c 'import torch; print(torch.__version__)'))" >&2
elif [[ "$flavour" == cuda ]]; then
    echo "genstudio: NVIDIA GPU found, installing CUDA torch==$TORCH_VERSION" >&2
    "${pip[@]}" install "torch==$TORCH_VERSION"
else
    echo "genstudio: no NVIDIA GPU, installing CPU-only torch==$TORCH_VERSION" >&2
    "${pip[@]}" install "torch==$TORCH_VERSION+cpu" 2>/dev/null \
        || "${pip[@]}" install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
fi

"${pip[@]}" install -e "$here[dev]"
echo "$want" > "$stamp"

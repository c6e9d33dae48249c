# Source at the start of a device-machine command: installs the carried wheels (.whl/)
# that the GPU image lacks, and sets PYTHONPATH so the repo and they import.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

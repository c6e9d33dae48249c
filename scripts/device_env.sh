# Source at the start of a device-machine command: installs the carried packages (.whl/) that
# the GPU image lacks -- wheels, or one site.tar.xz of them unpacked (smaller: the tree and the
# carried files share a 64 MiB limit) -- and sets PYTHONPATH so the repo and they import.
mkdir -p /tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
fi
if [ -f .whl/site.tar.xz ]; then tar xJf .whl/site.tar.xz -C /tmp/site || return 1; fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# Source at the start of a device-machine command: installs the carried packages (.whl/) that
# the GPU image lacks -- wheels, or one site.tar.xz of them unpacked (smaller: the tree and the
# carried files share a 64 MiB limit) -- and sets PYTHONPATH so the repo and they import.
# Building .whl/site.tar.xz (here, not on the device): pip download diffusers==0.42.1, open_clip_torch,
# ftfy and wcwidth (cp312 manylinux wheels), pip install --no-deps --target DIR, then drop what no run
# imports so the tree plus the tarball stay under 64 MiB: diffusers' pipelines and modular pipelines
# that nothing outside their own folder imports (video, audio, deprecated ones), open_clip_train, bin/,
# wcwidth's optional C extension (the pure-Python path is used), every __pycache__; then
# `tar cf - . | xz -9e > .whl/site.tar.xz` in DIR (2.8 MB on 2026-12-07).
mkdir -p /tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
fi
if [ -f .whl/site.tar.xz ]; then tar xJf .whl/site.tar.xz -C /tmp/site || return 1; fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

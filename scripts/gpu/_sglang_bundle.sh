# Sourced by the GPU scripts (not run): SGLang from the bundle that ../shared/device/sglang-bundle.sh
# builds into .sgl/ (carried with the working tree), for the offline GPU machine that has none.
# use_sglang_bundle: unpack it into /tmp/site once per machine (a warm machine keeps /tmp between
# calls), byte-compile it there (the bundle ships no bytecode: once, rather than in every server
# start), and put it on PYTHONPATH. Nothing where there is no bundle or SGLang is installed.
use_sglang_bundle() {
  [ -f .sgl/site.tar.xz ] || return 0
  if python3 -c "import sglang" 2>/dev/null; then return 0; fi
  if [ ! -f /tmp/site/.unpacked ]; then
    mkdir -p /tmp/site && tar -xJf .sgl/site.tar.xz -C /tmp/site || return 1
    python3 -m compileall -q -j 0 /tmp/site >/dev/null 2>&1 || true
    touch /tmp/site/.unpacked
  fi
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
}

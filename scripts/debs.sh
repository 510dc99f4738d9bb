# Sourced by the setup scripts: ensure_debs PACKAGE... installs the Debian packages not
# installed yet (one `apt-get update` first, only when one is missing).
ensure_debs() {
  local missing=() package
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Sourced by the setup scripts: ensure_debs PACKAGE... installs the Debian packages not
# installed yet (one `apt-get update` first, only when one is missing); private_apt and
# unpack_deb fetch packages of other Debian suites (other kernels, newer tools) without
# touching this machine's apt setup.
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

# The archive addresses this machine's apt uses (deb822 or one-line sources).
archive_uri() { # $1: debian | debian-security
  { grep -rhoE "https?://[^ ]+/$1/?( |$)" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } \
    | head -n1 | tr -d ' '
}

# private_apt DIR SUITE...: a sources list, lists and cache under DIR for those suites
# (main, -updates, -security) from this machine's archives, updated; sets APT_PRIVATE to
# the apt-get options that use it.
private_apt() {
  local dir=$1 suite debian security
  shift
  debian=$(archive_uri debian)
  security=$(archive_uri debian-security)
  [ -n "$debian" ] || { echo "debs.sh: no Debian archive in this machine's apt sources" >&2; return 1; }
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  : > "$dir/sources.list"
  for suite in "$@"; do
    echo "deb $debian $suite main" >> "$dir/sources.list"
    echo "deb $debian $suite-updates main" >> "$dir/sources.list"
    [ -n "$security" ] && echo "deb $security $suite-security main" >> "$dir/sources.list"
  done
  APT_PRIVATE=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "APT::Get::List-Cleanup=0")
  apt-get "${APT_PRIVATE[@]}" update -qq
}

# unpack_deb DIR SUITE PACKAGE DEST: PACKAGE from SUITE (through private_apt in DIR)
# unpacked into DEST, its Debian version written to DEST/.version; the .deb is removed.
unpack_deb() {
  local dir=$1 suite=$2 package=$3 dest=$4 deb
  private_apt "$dir" "$suite"
  rm -f "$dir"/*.deb
  (cd "$dir" && apt-get "${APT_PRIVATE[@]}" -o APT::Sandbox::User=root download -qq "$package")
  deb=$(find "$dir" -maxdepth 1 -name '*.deb' | head -n1)
  rm -rf "$dest"
  mkdir -p "$dest"
  dpkg-deb -x "$deb" "$dest"
  dpkg-deb -f "$deb" Version > "$dest/.version"
  rm -f "$deb"
}

# make_venv DIR: a Python venv at DIR, with Debian's python3-venv installed first when
# this python3 lacks its venv module.
make_venv() {
  rm -rf "$1"
  if ! python3 -m venv "$1" 2>/dev/null; then
    rm -rf "$1"
    ensure_debs python3-venv
    python3 -m venv "$1"
  fi
}

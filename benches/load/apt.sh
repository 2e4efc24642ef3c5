# Sourced by the load scripts: `apt_install PKG…` installs the Debian
# packages given (nothing when the list is empty), with sudo when not root.
apt_install() {
    (($#)) || return 0
    echo "installing: $*" >&2
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

# `install_missing CMD:PKG…` installs package PKG for each command CMD that
# is not on the PATH (or in /usr/sbin).
install_missing() {
    local need=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || [[ -x /usr/sbin/${pair%%:*} ]] ||
            need+=("${pair#*:}")
    done
    apt_install "${need[@]}"
}

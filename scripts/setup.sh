#!/usr/bin/env bash
# Installs what the project needs on a Debian/Ubuntu machine: a few Debian packages
# and a virtual environment in .venv with exactly the versions in requirements.lock.
# Idempotent: a second run with nothing changed does nothing but check.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
    python3-venv      # the virtual environment
    chromium          # the real browser the console and call tests drive
    firefox-esr       # the console works in Firefox too: its tests drive Debian's build over WebDriver BiDi
    coturn            # the real TURN server for relay tests and the demo
    xvfb xauth        # a virtual screen for the Kivy UI tests
    libgl1-mesa-dri   # Mesa, so Kivy renders under Xvfb
    openssl           # used by tests to inspect certificates like an admin would
    pipewire pipewire-bin wireplumber pipewire-pulse  # the unit's sound server; tests run a private one
    libspa-0.2-modules  # PipeWire's echo-cancel module with the WebRTC canceller
    pulseaudio-utils  # pacat/parec/pactl: the speaker and microphone streams (via pipewire-pulse)
    dbus-daemon       # a private session bus for the test PipeWire (WirePlumber needs one)
    alsa-utils        # aplay: the speaker where PipeWire is absent
    espeak-ng         # the Danish voice announcing the caller
    sox               # the ring tone and chime, and speech resampled to 48 kHz
    # the OS image (kiosk-image build/provision/audit) and its boot test under QEMU
    mmdebstrap                            # the Debian 13 root, from Debian's packages
    erofs-utils cryptsetup-bin            # read-only erofs roots and their dm-verity hash trees
    dosfstools mtools fdisk e2fsprogs     # FAT config/boot partitions (no root, no mount), GPT, ext4 data
    zstd                                  # the compressed image
    qemu-system-x86 ovmf                  # boot test: the amd64 image under UEFI
    socat                                 # boot test: the one forward from the VM to kiosk-server on loopback
    swtpm tpm2-tools libtss2-tcti-swtpm0  # a software TPM: the wipe's crypto-erase of a TPM-held key (tests, the amd64 VM)
    qemu-user-static binfmt-support       # arm64 builds on an amd64 host
    qemu-system-arm u-boot-qemu u-boot-tools  # arm64 boot under QEMU virt with Debian's U-Boot; boot.scr
    poppler-utils     # pdftoppm: the batch sheet printed to pixels, for its QR codes to be scanned back
    faketime          # libfaketime: tests give a unit a clock days behind or hours ahead
    postgresql        # the shared store of a large deployment: tests run a throw-away cluster; pg_dump for backups
    libpq5            # libpq, which psycopg (the PostgreSQL driver) loads
    nats-server       # the broker between server processes of a large deployment: tests run one on loopback
    haproxy           # one address in front of several server processes (device port TLS passthrough): tests
)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Node.js with npm: axe-core for the console's accessibility tests (package-lock.json) and the
# real OpenID Connect provider (npm oidc-provider) of the login tests. Any node that brings npm
# will do (NodeSource's nodejs includes it and conflicts with Debian's npm package).
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
        echo "setup: these Debian packages are missing: ${missing[*]}" >&2
        echo "setup: install them as root (apt-get install ${missing[*]}) and run again." >&2
        exit 1
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q >/dev/null || { echo "setup: apt-get update failed; is the package mirror reachable?" >&2; exit 1; }
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || { echo "setup: apt-get install ${missing[*]} failed" >&2; exit 1; }
fi

# The test OpenID Connect provider: exactly the npm packages its lock file names.
idp=tests/server/oidc_idp
idp_want=$(sha256sum "$idp/package-lock.json" | cut -d' ' -f1)
if [[ ! -f $idp/node_modules/.installed || $(cat "$idp/node_modules/.installed") != "$idp_want" ]]; then
    echo "setup: installing the test OIDC provider (npm ci in $idp)"
    npm ci --prefix "$idp" --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null \
        || { echo "setup: npm ci in $idp failed; is the npm registry reachable?" >&2; exit 1; }
    echo "$idp_want" > "$idp/node_modules/.installed"
fi

PYTHON=${PYTHON:-python3}
stamp=.venv/.installed
want=$(cat pyproject.toml requirements.lock package-lock.json | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    exit 0
fi
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv || { echo "setup: could not create .venv with $PYTHON (needs Python >= 3.11 and venv)" >&2; exit 1; }
fi
echo "setup: installing Python packages into .venv (pinned by requirements.lock)"
# (the grep hides a harmless warning some pip configurations print for every package)
quiet() { grep -v "is ignored: it is neither" || true; }
.venv/bin/pip install -q --upgrade pip 2>&1 | quiet
.venv/bin/pip install -q -c requirements.lock -e '.[test]' 2>&1 | quiet
[[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "setup: pip install failed (see above)" >&2; exit 1; }
# The screen's translations: each .po compiled to its .mo (Babel); the .mo files stay out of git.
.venv/bin/python -m kiosk.ui.i18n || { echo "setup: compiling the screen's translations failed" >&2; exit 1; }
# Browser-side test tools (axe-core), exactly as package-lock.json pins them, into node_modules/.
npm ci --no-audit --no-fund --silent || { echo "setup: npm ci failed; is the npm registry reachable?" >&2; exit 1; }
echo "$want" > "$stamp"

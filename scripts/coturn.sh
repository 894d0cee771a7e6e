#!/usr/bin/env bash
# Runs Debian's coturn (turnserver) on loopback, in the foreground, for the
# tests (tests/turn_fixture.py) and `make demo`. Not for production: it relays
# to loopback peers, which a real TURN server must never do.
#
#   COTURN_SECRET=... scripts/coturn.sh --port 34780 [--realm R] [--dir D]
#   scripts/coturn.sh --port 34780 --secret ...
#
# The secret is the TURN REST API shared secret (use-auth-secret); the server
# hands out credentials derived from it (kiosk/server/turn.py). Prefer the
# environment: an argument is visible in `ps` until this script execs coturn.
# It is written only to a 0600 config file in --dir, never to coturn's argv.
#
# --dir holds that config, the pid file and coturn's (empty) database; it
# defaults to a fresh temporary directory. Logs go to stdout.
# The process execs turnserver, so its pid is coturn's: SIGTERM stops it.
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: scripts/coturn.sh --port PORT [--secret SECRET] [--realm REALM] [--dir DIR]
                         [--min-port N --max-port N]
  PORT      UDP and TCP port to listen on, on 127.0.0.1 only
  SECRET    TURN REST API shared secret (default: $COTURN_SECRET), at least
            16 characters of A-Z a-z 0-9 . _ ~ + / = -  (e.g. `openssl rand -hex 32`)
  REALM     TURN realm (default: skaermbesoeg.local)
  DIR       directory for the generated config, pid file and database
            (default: a new temporary directory)
  N         relay port range (default: coturn's 49152-65535)
EOF
    exit 2
}

die() { echo "coturn.sh: $*" >&2; exit 1; }

port=""
secret="${COTURN_SECRET:-}"
realm="skaermbesoeg.local"
dir=""
min_port=""
max_port=""
while (($#)); do
    case "$1" in
        --port) port="${2:-}"; shift 2 || usage ;;
        --secret) secret="${2:-}"; shift 2 || usage ;;
        --realm) realm="${2:-}"; shift 2 || usage ;;
        --dir) dir="${2:-}"; shift 2 || usage ;;
        --min-port) min_port="${2:-}"; shift 2 || usage ;;
        --max-port) max_port="${2:-}"; shift 2 || usage ;;
        -h|--help) usage ;;
        *) echo "coturn.sh: unknown argument: $1" >&2; usage ;;
    esac
done

valid_port() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

valid_port "$port" || die "--port must be a number from 1 to 65535, got '${port}'"
# The secret goes into a config file line: refuse anything that could end the
# line or start a comment, and anything too short to be a secret at all.
[[ "$secret" =~ ^[A-Za-z0-9._~+/=-]{16,}$ ]] \
    || die "the secret (--secret or \$COTURN_SECRET) must be at least 16 characters of A-Z a-z 0-9 . _ ~ + / = - ; make one with: openssl rand -hex 32"
[[ "$realm" =~ ^[A-Za-z0-9.-]{1,253}$ ]] || die "--realm must be a domain-like name, got '${realm}'"
if [[ -n "$min_port$max_port" ]]; then
    valid_port "$min_port" && valid_port "$max_port" && ((10#$min_port <= 10#$max_port)) \
        || die "--min-port and --max-port must both be given, 1-65535, min <= max"
fi

turnserver=$(command -v turnserver) \
    || die "turnserver not found; install Debian's coturn package (apt-get install coturn, which scripts/setup.sh does)"

umask 077
if [[ -z "$dir" ]]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/kiosk-coturn.XXXXXX")
    echo "coturn.sh: state in $dir (holds the secret; delete it when done)" >&2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/turnserver.conf"

# Passed with -c, so /etc/turnserver.conf (Debian's, possibly a system
# service's) is never read. Why each option:
{
    # Loopback only, both where clients connect and where relayed traffic
    # leaves from: nothing on the network can reach this server.
    echo "listening-ip=127.0.0.1"
    echo "relay-ip=127.0.0.1"
    echo "listening-port=$port"
    if [[ -n "$min_port" ]]; then
        echo "min-port=$min_port"
        echo "max-port=$max_port"
    fi
    # TURN REST API: time-limited HMAC credentials from the shared secret, the
    # scheme kiosk/server/turn.py implements. A realm is required with it.
    echo "use-auth-secret"
    echo "static-auth-secret=$secret"
    echo "realm=$realm"
    # WebRTC peers send FINGERPRINT; answer in kind.
    echo "fingerprint"
    # Both peers of a test call sit on 127.0.0.1: coturn refuses loopback
    # peers by default (they would let a client reach the server's own
    # services), so a loopback relay test cannot work without this.
    echo "allow-loopback-peers"
    echo "no-multicast-peers"
    # Plain UDP/TCP only: no certificate needed, and no fixed TLS/DTLS port
    # (5349) that two parallel test runs would fight over.
    echo "no-tls"
    echo "no-dtls"
    # No telnet CLI on the fixed port 5766 (collides between parallel runs, and
    # coturn forbids it with loopback peers and an empty CLI password).
    echo "no-cli"
    # Keep every file in our directory, not /var/run, /var/lib/turn or /var/log.
    echo "pidfile=$dir/turnserver.pid"
    echo "userdb=$dir/turndb"
    echo "log-file=stdout"
    # The secret is static: stop coturn polling its (empty) database for
    # dynamic secrets, realms and peer lists.
    echo "no-auth-pings"
    echo "no-dynamic-ip-list"
    echo "no-dynamic-realms"
    # One address: no RFC 5780 NAT discovery (it would want a second one).
    echo "no-rfc5780"
    echo "no-software-attribute"
} >"$conf"

exec "$turnserver" -c "$conf"

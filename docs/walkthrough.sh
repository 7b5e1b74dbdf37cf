#!/usr/bin/env bash
# The operator's guide (README and docs/), command by command, on the example cluster.
#
# Part A runs under `spare up`: the short tour, `spare sql`, the HTTP API, backups, renewing a
# certificate, the operator's-mistake walkthrough back to the normal layout, a switchover,
# adding a spare by reload, `spare verify`, a backup restored as a new spare.
# Part B runs a fresh copy of the example the production way, one `spare run` per node:
# `spare certs init`, the primary killed with SIGKILL, `spare promote` (preview, then for
# real), the old primary back, fenced, and `spare rejoin`.
#
# Each guide command goes through `run`, which shows it as `$ COMMAND` with its output and
# appends both to the transcript: tests/walkthrough.rs runs this script on free ports and
# checks every command of the guide's pages was run here, and that the outputs the pages
# show are what the commands printed. It works on a copy of the configuration it is given,
# in its own directory (WORK, a new temporary one by default), and never changes the
# original. To run it yourself on the example's ports, from the repository:
#
#   SPARE=./target/release/spare SPARE_CONFIG=cluster-config/cluster.toml \
#     LAN2_PEER=127.0.0.1:7405 LAN2_HTTP=127.0.0.1:7305 \
#     LAN3_PEER=127.0.0.1:7406 LAN3_HTTP=127.0.0.1:7306 bash docs/walkthrough.sh
#
# It starts the nodes itself and stops them at the end. Its own waits are bounded (60 s
# each); `spare reload` and `spare rejoin` wait for their spares up to an hour, as for an
# operator (the test kills the whole walkthrough after 5 minutes).
set -euo pipefail

MAIN_HTTP=${MAIN_HTTP:-127.0.0.1:7301}
LAN1_HTTP=${LAN1_HTTP:-127.0.0.1:7302}
WATCH_HTTP=${WATCH_HTTP:-127.0.0.1:7304}
# The binary by absolute path (part B changes directory).
SPARE_BIN=$(command -v "${SPARE:-spare}") || { echo "walkthrough: no ${SPARE:-spare} binary" >&2; exit 1; }
SPARE_BIN=$(realpath "$SPARE_BIN")
# Its own directory, with a copy of the configuration whose data directories are in it.
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/spare-walkthrough.XXXXXX")}
mkdir -p "$WORK"
sed 's|^data_dir = ".*/\([^/"]*\)"|data_dir = "data/\1"|; s|^data_dir = "\([^/"]*\)"|data_dir = "data/\1"|' \
  "$SPARE_CONFIG" > "$WORK/cluster.toml"
export SPARE_CONFIG=$WORK/cluster.toml
cd "$WORK"
TRANSCRIPT=$WORK/transcript.txt
: > "$TRANSCRIPT"

spare() { "$SPARE_BIN" "$@"; }
step() { printf '\n== %s\n' "$*"; }
fail() { echo "walkthrough: $*" >&2; exit 1; }
# run COMMAND...: a command of the guide. Shows `$ COMMAND` and its output (stdout and
# stderr, in order), appends both to the transcript, returns the command's exit status.
run() {
  local code=0
  # The words quoted as the shell reads them back (printf %q): the test splits them again.
  { printf '$'; printf ' %q' "$@"; printf '\n'; "$@" 2>&1 || code=$?; } > run.out
  # An output without a final newline (curl's) still ends its line.
  if [ -s run.out ] && [ -n "$(tail -c 1 run.out)" ]; then echo >> run.out; fi
  cat run.out >> "$TRANSCRIPT"
  cat run.out
  return "$code"
}
# wait_for WHAT COMMAND...: runs COMMAND until it succeeds, for 60 s at most.
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + 60))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
    sleep 0.2
  done
}
# holds NODE SQL EXPECTED: the query on NODE prints EXPECTED (one value).
holds() { [ "$(spare sql --node "$1" "$2" | sed -n 3p)" = "$3" ]; }
# The status table, whatever its exit status (1 while problems are listed).
status_table() { spare status 2>/dev/null || true; }
# is_role NODE ROLE / is_state NODE STATE: NODE's line of `spare status` says so.
is_role() { status_table | awk -v n="$1" -v r="$2" '$1 == n && $2 == r { f = 1 } END { exit !f }'; }
is_state() { status_table | awk -v n="$1" -v s="$2" '$1 == n && index($0, " " s " ") { f = 1 } END { exit !f }'; }
# seen NODE LSN: the monitor's view (`spare status`) has NODE streaming at LSN or later.
seen() { status_table | awk -v n="$1" -v l="$2" '$1 == n && $3 == "streaming" && $5 >= l { f = 1 } END { exit !f }'; }
# no_primary: the monitor's view names no primary (its first line ends "primary -").
no_primary() { status_table | head -n 1 | grep -q 'primary -$'; }
# no_bar FILE: nothing drawn into FILE (no carriage return, no escape code).
no_bar() { if grep -q $'\r\|\x1b' "$1"; then fail "progress bars were drawn into $1"; fi; }

# add_spare NAME PEER HTTP: the guide's "$EDITOR cluster.toml": a [[node]] for a new spare.
add_spare() {
  printf '\n[[node]]\nname = "%s"\nrole = "spare"\npeer = "%s"\nhttp = "%s"\ndata_dir = "data/%s"\n' \
    "$1" "$2" "$3" "$1" >> "$SPARE_CONFIG"
}

PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

########## Part A: the example under `spare up`

step "spare up (README)"
printf '$ spare up\n' >> "$TRANSCRIPT"
# Started directly, not through the `spare` function: $! must be the node process itself.
"$SPARE_BIN" up > up.log 2>&1 &
PIDS+=($!)
wait_for "the example cluster" spare status
# A pristine copy of the example, for part B (its data directories beside it).
mkdir fresh
cp cluster.toml cluster.secret fresh/

step "A short tour (README)"
run spare sql "CREATE TABLE invoice (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT NOT NULL, total REAL, at TEXT DEFAULT (datetime('now')))"
run spare sql "INSERT INTO invoice (customer, total) VALUES (?, ?)" ACME 120.5
said=$(run spare sql "INSERT INTO invoice (customer, total) VALUES (?, ?)" Globex 99)
echo "$said"
wait_for "lan-1 to hold both invoices" holds lan-1 "SELECT count(*) FROM invoice" 2
run spare sql --node lan-1 "SELECT * FROM invoice"
wait_for "the monitor to see lan-1 hold both" seen lan-1 "$(echo "$said" | sed -n 's/.*LSN \([0-9]*\).*/\1/p')"
run spare status

run spare status --json > /dev/null
run spare --help > /dev/null

step "spare sql (docs/commands.md)"
said=$(run spare sql "UPDATE invoice SET total = ? WHERE id = ?" 130 1)
echo "$said"
AT=$(echo "$said" | sed -n 's/.*LSN \([0-9]*\).*/\1/p')
[ -n "$AT" ] || fail "no LSN in: $said"
run spare sql --node lan-1 --min-lsn "$AT" "SELECT * FROM invoice"
run spare sql --json --node lan-1 "SELECT count(*) FROM invoice"

step "The HTTP API (docs/http-api.md)"
run curl -s "$MAIN_HTTP/v1/execute" -d '{"sql": "INSERT INTO invoice (customer, total) VALUES (?, ?)", "params": ["Initech", 42]}'
run curl -s "$MAIN_HTTP/v1/execute" -d '{"batch": [{"sql": "UPDATE invoice SET total = total * 1.2"}, {"sql": "DELETE FROM invoice WHERE total > 1000"}]}'
refused=$(run curl -s -w ' HTTP %{http_code}\n' "$LAN1_HTTP/v1/execute" -d '{"sql": "DELETE FROM invoice"}')
echo "$refused"
echo "$refused" | grep -q "HTTP 421" || fail "a write to a spare was not refused 421: $refused"
LSN=$(spare sql "DELETE FROM invoice WHERE customer = 'Initech'" | sed -n 's/.*LSN \([0-9]*\).*/\1/p')
run curl -s "$LAN1_HTTP/v1/query" -d "{\"sql\": \"SELECT id, customer FROM invoice\", \"min_lsn\": $LSN}"
run curl -s "$MAIN_HTTP/v1/status" > /dev/null
run curl -s "$WATCH_HTTP/v1/cluster" > /dev/null
run curl -s "$MAIN_HTTP/metrics" > metrics.txt
grep -q "^spare_commits_total" metrics.txt || fail "/metrics has no spare_commits_total"

step "Backups (docs/backups.md, docs/commands.md)"
run spare backup --out shop-backup.sqlite --node lan-1
[ -s shop-backup.sqlite ] && [ -s shop-backup.sqlite.json ] || fail "the backup or its description is missing"
mkdir -p backups
run spare backup --out backups/shop.sqlite --node lan-1

step "Certificates: renew main's, on the running cluster (docs/certificates.md)"
run spare certs renew main
run spare reload
run spare sql "INSERT INTO invoice (customer, total) VALUES (?, ?)" Initech 10
wait_for "lan-1 to hold the third invoice" holds lan-1 "SELECT count(*) FROM invoice" 3
spare sql "DELETE FROM invoice WHERE customer = 'Initech'"

step "Recover from an operator's mistake: the table (docs/mistakes.md)"
run spare sql "CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT)"
run spare sql "INSERT INTO customer (name, city) VALUES ('ACME', 'Lyon')"
run spare sql "INSERT INTO customer (name, city) VALUES ('Globex', 'Paris')"
run spare sql "INSERT INTO customer (name, city) VALUES ('Initech', 'Nantes')"

step "1. The mistake"
said=$(run spare sql "DELETE FROM customer")
echo "$said"
BAD=$(echo "$said" | sed -n 's/.*LSN \([0-9]*\).*/\1/p')
[ -n "$BAD" ] || fail "no LSN in: $said"
wait_for "lan-1 to copy the mistake" holds lan-1 "SELECT count(*) FROM customer" 0
run spare sql --node lan-1 "SELECT count(*) FROM customer"
wait_for "the monitor to see lan-1 hold it" seen lan-1 "$BAD"
run spare status || true

step "2. Stop the delayed spare"
run spare pause office

step "3. Find the transaction"
run spare log --table customer | grep -q "customer: 3 deleted" || fail "spare log does not list the delete"
run spare log --since 30m --table customer > /dev/null
run spare log --show "$BAD" | grep -q "delete from customer" || fail "spare log --show does not show it"

step "4. Promote the delayed spare up to just before it"
if run spare promote office --until $((BAD - 1)) --force > refusal.txt; then
  fail "the discarded transaction was not asked to be accepted"
fi
grep -q -- "--accept-loss 1" refusal.txt || fail "the refusal does not say --accept-loss 1: $(cat refusal.txt)"
run spare promote office --until $((BAD - 1)) --force --accept-loss 1
run spare sql "SELECT * FROM customer"
[ "$(spare sql "SELECT count(*) FROM customer" | sed -n 3p)" = 3 ] || fail "the rows are not back"

step "5. Back to the normal layout"
wait_for "main to be fenced" is_role main fenced
run spare rejoin main
wait_for "main to follow office" holds main "SELECT count(*) FROM customer" 3
wait_for "main to stream" is_state main streaming
run spare status || true
run spare switchover main
wait_for "main to lead again" is_role main primary
wait_for "office to be the delayed spare again" is_state office "delayed (30m)"
run spare status || true

step "Planned switchover, and back (docs/switchover.md)"
wait_for "lan-1 to stream" is_state lan-1 streaming
run spare switchover lan-1
wait_for "lan-1 to lead" is_role lan-1 primary
wait_for "main to stream from lan-1" is_state main streaming
run spare switchover main
wait_for "main to lead again" is_role main primary

step "Adding a spare (docs/add-a-spare.md, docs/commands.md)"
add_spare lan-2 "$LAN2_PEER" "$LAN2_HTTP"
run spare certs add lan-2
run spare reload > reload.out || { cat reload.out; fail "spare reload failed"; }
cat reload.out
grep -q "lan-2: streaming" reload.out || fail "spare reload did not say lan-2 streams: $(cat reload.out)"
wait_for "lan-2 to hold both invoices" holds lan-2 "SELECT count(*) FROM invoice" 2

step "Pause and resume the delayed spare (docs/mistakes.md)"
run spare pause office
run spare resume office

step "A new CA, beside the current one (docs/certificates.md)"
run spare certs init --out next-ca
[ -s next-ca/ca.pem ] && [ -s next-ca/main.pem ] || fail "spare certs init --out did not write next-ca/"

step "spare verify (docs/commands.md)"
# office is delayed: it is skipped (exit 2) unless it stands at the compared LSN.
code=0
run spare verify || code=$?
[ "$code" -eq 0 ] || [ "$code" -eq 2 ] || fail "spare verify found a difference (exit $code)"

step "Restore a backup as a new spare (docs/backups.md, docs/commands.md)"
add_spare lan-3 "$LAN3_PEER" "$LAN3_HTTP"
run spare restore --from backups/shop.sqlite --node lan-3
run spare certs add lan-3
run spare reload
wait_for "lan-3 to hold every customer" holds lan-3 "SELECT count(*) FROM customer" 3
holds lan-3 "SELECT count(*) FROM invoice" 2 || fail "lan-3 lost the backup's invoices"
stop_all

########## Part B: a fresh copy of the example, one process per node

step "Certificates for the fresh copy (docs/remote-spare.md)"
cd fresh
export SPARE_CONFIG=$PWD/cluster.toml
run spare certs init

step "One process per node (docs/commands.md, docs/promote.md)"
# Started directly: $! must be the node process itself (main's is killed below).
printf '$ spare run --node main --log-level debug --log-format json\n' >> "$TRANSCRIPT"
"$SPARE_BIN" run --node main --log-level debug --log-format json > main.log 2>&1 &
MAIN=$!
PIDS+=($MAIN)
for node in lan-1 office watch-1; do
  printf '$ spare run --node %s &\n' "$node" >> "$TRANSCRIPT"
  "$SPARE_BIN" run --node "$node" > "$node.log" 2>&1 &
  PIDS+=($!)
done
wait_for "the fresh cluster" is_state office "delayed (30m)"
spare sql "CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total REAL)"
spare sql "INSERT INTO invoice (customer, total) VALUES ('ACME', 120.5)"
wait_for "lan-1 to hold the invoice" holds lan-1 "SELECT count(*) FROM invoice" 1

step "Promote a spare (docs/promote.md): main dies"
kill -9 "$MAIN"
wait "$MAIN" 2>/dev/null || true
# No longer ours to stop (its number may be reused).
alive=()
for p in "${PIDS[@]}"; do [ "$p" = "$MAIN" ] || alive+=("$p"); done
PIDS=("${alive[@]}")
wait_for "the monitor to see main gone" is_state main unreachable
wait_for "lan-1 to see main gone" is_state lan-1 disconnected
wait_for "the monitor to name no primary" no_primary
run spare status || true
run spare promote lan-1 --dry-run
run spare promote lan-1
run spare sql "INSERT INTO invoice (customer, total) VALUES (?, ?)" Globex 99

step "The old primary comes back (docs/old-primary.md)"
printf '$ spare run --node main\n' >> "$TRANSCRIPT"
"$SPARE_BIN" run --node main > main.log 2>&1 &
PIDS+=($!)
wait_for "main to be fenced" is_role main fenced
run spare status || true
run spare rejoin main
wait_for "main to follow lan-1" holds main "SELECT count(*) FROM invoice" 2
wait_for "main to stream" is_state main streaming
run spare status || true

# Off a terminal, no command drew a progress bar into its output.
no_bar "$TRANSCRIPT"
echo
echo "walkthrough: every step passed (its files: $WORK)"

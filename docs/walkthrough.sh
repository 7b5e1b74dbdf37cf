#!/usr/bin/env bash
# The operator's path of the guide (README and docs/), command by command, on the example cluster: the short
# tour, a backup to a bare file name, adding a TLS spare by reload, the operator's-mistake
# walkthrough through to the normal layout again, and `spare verify`. The test suite runs it
# (tests/walkthrough.rs) against a copy of cluster-config/ on free ports; you can run it
# yourself from a scratch copy of the repository's example:
#
#   SPARE=./target/release/spare SPARE_CONFIG=cluster-config/cluster.toml \
#     LAN2_PEER=127.0.0.1:7405 LAN2_HTTP=127.0.0.1:7305 \
#     LAN3_PEER=127.0.0.1:7406 LAN3_HTTP=127.0.0.1:7306 bash docs/walkthrough.sh
#
# It starts `spare up` itself and stops it at the end. Every wait is bounded (60 s).
set -euo pipefail

spare() { "${SPARE:-spare}" "$@"; }
step() { printf '\n== %s\n' "$*"; }
fail() { echo "walkthrough: $*" >&2; exit 1; }
# wait_for WHAT COMMAND...: runs COMMAND until it succeeds, for 60 s at most.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  fail "timed out waiting for $what"
}
# holds NODE SQL EXPECTED: the query on NODE prints EXPECTED (one value).
holds() { [ "$(spare sql --node "$1" "$2" | sed -n 3p)" = "$3" ]; }
# The status table, whatever its exit status (1 while problems are listed).
status_table() { spare status 2>/dev/null || true; }
# is_role NODE ROLE / is_state NODE STATE: NODE's line of `spare status` says so.
is_role() { status_table | awk -v n="$1" -v r="$2" '$1 == n && $2 == r { f = 1 } END { exit !f }'; }
is_state() { status_table | awk -v n="$1" -v s="$2" '$1 == n && index($0, " " s " ") { f = 1 } END { exit !f }'; }

step "spare up"
# Started directly, not through the `spare` function: $! must be the node process itself.
"${SPARE:-spare}" up > up.log 2>&1 &
UP=$!
trap 'kill $UP 2>/dev/null || true; wait $UP 2>/dev/null || true' EXIT
wait_for "the example cluster" spare status

step "A short tour"
spare sql "CREATE TABLE invoice (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT NOT NULL, total REAL, at TEXT DEFAULT (datetime('now')))"
spare sql "INSERT INTO invoice (customer, total) VALUES (?, ?)" ACME 120.5
spare sql "INSERT INTO invoice (customer, total) VALUES (?, ?)" Globex 99
wait_for "lan-1 to hold both invoices" holds lan-1 "SELECT count(*) FROM invoice" 2
spare sql --node lan-1 "SELECT * FROM invoice"
spare status

step "Backups: a bare file name"
spare backup --out shop-backup.sqlite --node lan-1
[ -s shop-backup.sqlite ] && [ -s shop-backup.sqlite.json ] || fail "the backup or its description is missing"

step "Adding a spare (TLS: its certificate first)"
cat >> "$SPARE_CONFIG" <<EOF

[[node]]
name = "lan-2"
role = "spare"
peer = "$LAN2_PEER"
http = "$LAN2_HTTP"
data_dir = "data/lan-2"
EOF
spare certs add lan-2
spare reload 2> reload.err || { cat reload.err; fail "spare reload failed"; }
cat reload.err
grep -q "lan-2: streaming" reload.err || fail "spare reload did not say lan-2 streams: $(cat reload.err)"
# Not a terminal: no progress bar drawn into the file (no carriage return, no escape code).
if grep -q $'\r\|\x1b' reload.err; then fail "progress bars were drawn into a file"; fi
wait_for "lan-2 to hold both invoices" holds lan-2 "SELECT count(*) FROM invoice" 2

step "Certificates: renew lan-1's, on the running cluster (docs/certificates.md)"
spare certs renew lan-1
spare reload
spare sql "INSERT INTO invoice (customer, total) VALUES (?, ?)" Initech 10
wait_for "lan-1 to hold the third invoice" holds lan-1 "SELECT count(*) FROM invoice" 3
spare sql "DELETE FROM invoice WHERE customer = 'Initech'"

step "Recover from an operator's mistake: the table"
spare sql "CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT)"
spare sql "INSERT INTO customer (name, city) VALUES ('ACME', 'Lyon')"
spare sql "INSERT INTO customer (name, city) VALUES ('Globex', 'Paris')"
spare sql "INSERT INTO customer (name, city) VALUES ('Initech', 'Nantes')"

step "1. The mistake"
said=$(spare sql "DELETE FROM customer")
echo "$said"
BAD=$(echo "$said" | sed -n 's/.*LSN \([0-9]*\).*/\1/p')
[ -n "$BAD" ] || fail "no LSN in: $said"
wait_for "lan-1 to copy the mistake" holds lan-1 "SELECT count(*) FROM customer" 0
spare status || true

step "2. Stop the delayed spare"
spare pause office

step "3. Find the transaction"
spare log --table customer | grep -q "customer: 3 deleted" || fail "spare log does not list the delete"
spare log --show "$BAD" | grep -q "delete from customer" || fail "spare log --show does not show it"

step "4. Promote the delayed spare up to just before it"
if spare promote office --until $((BAD - 1)) --force > refusal.txt 2>&1; then
  fail "the discarded transaction was not asked to be accepted"
fi
grep -q -- "--accept-loss 1" refusal.txt || fail "the refusal does not say --accept-loss 1: $(cat refusal.txt)"
spare promote office --until $((BAD - 1)) --force --accept-loss 1
[ "$(spare sql "SELECT count(*) FROM customer" | sed -n 3p)" = 3 ] || fail "the rows are not back"

step "5. Back to the normal layout"
wait_for "main to be fenced" is_role main fenced
spare rejoin main
wait_for "main to follow office" holds main "SELECT count(*) FROM customer" 3
wait_for "main to stream" is_state main streaming
spare switchover main
wait_for "main to lead again" is_role main primary
wait_for "office to be the delayed spare again" is_state office "delayed (30m)"
spare status || true

step "spare verify"
# office is delayed: it is skipped (exit 2) unless it stands at the compared LSN.
code=0
spare verify || code=$?
[ "$code" -eq 0 ] || [ "$code" -eq 2 ] || fail "spare verify found a difference (exit $code)"
step "Restore the backup as a new spare (docs/backups.md)"
cat >> "$SPARE_CONFIG" <<EOF

[[node]]
name = "lan-3"
role = "spare"
peer = "$LAN3_PEER"
http = "$LAN3_HTTP"
data_dir = "data/lan-3"
EOF
spare restore --from shop-backup.sqlite --node lan-3
spare certs add lan-3
spare reload
wait_for "lan-3 to hold every customer" holds lan-3 "SELECT count(*) FROM customer" 3
holds lan-3 "SELECT count(*) FROM invoice" 2 || fail "lan-3 lost the backup's invoices"
spare status || true

echo
echo "walkthrough: every step passed"

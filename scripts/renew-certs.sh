#!/usr/bin/env bash
# Platform script for cron: issue missing and renew expiring workload certificates.
# Idempotent: a run with nothing to renew changes no file. Running parts pick renewed files up
# within their reload interval (no restart). Environment (defaults in brackets):
#   IDENTITIES [identities]  CA_DIR [certs/ca]  OUT_DIR [certs]  RENEW_WITHIN [8h]
# With OUT_DIR/p12-passphrase present (as `npm run certs` leaves it), PKCS#12 bundles are renewed too.
# Example crontab line: 17 * * * *  /srv/portcullis/scripts/renew-certs.sh >> /var/log/portcullis-certs.log 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT_DIR:-certs}"
# Where `npm run certs` exported PKCS#12 bundles, renew them too (same passphrase file).
p12=()
if [[ -f "$out/p12-passphrase" ]]; then p12=(--p12 --passphrase-file "$out/p12-passphrase"); fi
exec node_modules/.bin/node cli/portcullis.ts certs issue \
  --identities "${IDENTITIES:-identities}" \
  --ca "${CA_DIR:-certs/ca}" \
  --out "$out" \
  --renew-within "${RENEW_WITHIN:-8h}" \
  "${p12[@]}"

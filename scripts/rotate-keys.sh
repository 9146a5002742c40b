#!/usr/bin/env bash
# Platform script: ask the STS to rotate its signing key now (the next key starts signing once it
# has been published for a JWKS cache period), then list the keys. Uses the admin console's
# certificate. Environment (defaults in brackets):
#   STS_URL [https://localhost:8443]  ADMIN_CERT [certs/admin-console.pem]
#   ADMIN_KEY [certs/admin-console-key.pem]  TRUST [certs/root.pem]
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(--sts "${STS_URL:-https://localhost:8443}" --cert "${ADMIN_CERT:-certs/admin-console.pem}"
  --key "${ADMIN_KEY:-certs/admin-console-key.pem}" --ca "${TRUST:-certs/root.pem}")
node_modules/.bin/node cli/portcullis.ts keys rotate "${flags[@]}"
node_modules/.bin/node cli/portcullis.ts keys list "${flags[@]}"

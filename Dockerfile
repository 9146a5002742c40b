# syntax=docker/dockerfile:1.7
# Portcullis on the official Node 24 image (docs/operations.md).
# Two stages: the first bundles the TypeScript sources with `npm run build` (esbuild, decision 0091)
# into plain ES modules under dist/; the image runs those, so no process strips types at run time
# (less memory and a faster start for every sidecar). It holds dist/, the production dependencies
# the bundles leave external, the demo apps and the example data. The `node` devDependency exists
# to give Node 24 to development machines that have an older one; the image already is Node 24.
#
#   docker build -t portcullis .
#   docker run --rm portcullis --help
#   docker run --rm portcullis sts --config /app/config/compose/sts.yaml      (see docker-compose.yml)
FROM node:24-bookworm-slim AS build
WORKDIR /app
# Every dependency (esbuild is a devDependency), from the lockfile, no install scripts: esbuild's
# binary comes in its platform package (@esbuild/linux-x64), which needs none.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY core/ core/
COPY ca/ ca/
COPY audit/ audit/
COPY sts/ sts/
COPY sidecar/ sidecar/
COPY cli/ cli/
COPY demo/ demo/
COPY scripts/build.ts scripts/undici-lean.mjs scripts/
RUN node scripts/build.ts

FROM node:24-bookworm-slim

ENV NODE_ENV=production
WORKDIR /app

# Dependencies first, so that a source change does not reinstall them. No install scripts run:
# no production dependency needs one.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# The built command, the demo apps and the example data. Owned by root and read-only to the `node`
# user that runs them. .dockerignore keeps everything else (tests, certs, keys, data) out.
COPY --from=build /app/dist/ dist/
# The console's pages (served from disk by `portcullis console`).
COPY console/ console/
COPY demo/ demo/
COPY identities/ identities/
COPY policies/ policies/
COPY config/ config/

# Health probe: GET a URL (argument, or PORTCULLIS_HEALTHCHECK_URL) and exit 0 only on 200. https
# URLs are checked against PORTCULLIS_HEALTHCHECK_CA (default: the trust bundle the `certs` service
# writes), so a probe of the STS or the collector also proves their certificate is valid.
# test/deploy/compose.test.ts runs this very script against real servers.
COPY --chmod=755 <<'PROBE' /usr/local/bin/portcullis-healthcheck
#!/usr/bin/env node
'use strict';
const target = process.argv[2] || process.env.PORTCULLIS_HEALTHCHECK_URL;
const fail = (why) => {
  console.error(`portcullis-healthcheck: ${why}`);
  process.exit(1);
};
if (!target) fail('no URL (give one as the argument or in PORTCULLIS_HEALTHCHECK_URL)');
let url;
try {
  url = new URL(target);
} catch {
  fail(`"${target}" is not a URL`);
}
const options = { timeout: 3000 };
if (url.protocol === 'https:') {
  const caFile = process.env.PORTCULLIS_HEALTHCHECK_CA || '/var/lib/portcullis/certs/root.pem';
  try {
    options.ca = require('node:fs').readFileSync(caFile);
  } catch (err) {
    fail(`${caFile}: ${err.code || err.message}`);
  }
} else if (url.protocol !== 'http:') {
  fail(`${target}: only http and https URLs`);
}
const req = require(url.protocol === 'https:' ? 'node:https' : 'node:http').get(url, options, (res) => {
  res.resume();
  if (res.statusCode !== 200) fail(`${target}: HTTP ${res.statusCode}`);
  console.log(`${target}: HTTP 200`);
  process.exit(0);
});
req.on('timeout', () => req.destroy(new Error('no answer within 3 s')));
req.on('error', (err) => fail(`${target}: ${err.message}`));
PROBE

# Mount points of the compose volumes, created here so that new named volumes start out owned by
# `node` with mode 0700: ca/ (CA keys, the certs service only), certs/ (leaves and trust bundle),
# state/ (spools, the collector's checkpoint key), checkpoints/ (saved checkpoints, tools profile).
RUN mkdir -p /var/lib/portcullis/ca /var/lib/portcullis/certs /var/lib/portcullis/state \
      /var/lib/portcullis/checkpoints \
  && chown -R node:node /var/lib/portcullis \
  && chmod -R 0700 /var/lib/portcullis

# V8's compile cache of the command bundles (decision 0107), written once here by the user and the
# flags the ENTRYPOINT runs with (Node names the cache after both), then made read-only: each start
# reads it instead of parsing its 0.5-2 MB bundle. `--help` loads every command group.
RUN install -d -o node -g node dist/.compile-cache
USER node
RUN node --liftoff-only dist/cli/portcullis.js --help > /dev/null
USER root
RUN chown -R root:root dist/.compile-cache && chmod -R u=rwX,go=rX dist/.compile-cache
USER node

# STS, audit collector, sidecar inbound (orders, web). Sidecar outbound and metrics stay on loopback.
EXPOSE 8443 8444 15443 15444

# Each compose service names its own probe URL; a container started without one reports unhealthy
# rather than pretending to be healthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["portcullis-healthcheck"]

# --liftoff-only: WebAssembly (undici's HTTP parser) stays on V8's baseline compiler; its optimized
# code was ~12 MB of each sidecar's resident memory (decision 0097). Not allowed in NODE_OPTIONS.
ENTRYPOINT ["node", "--liftoff-only", "dist/cli/portcullis.js"]
CMD ["--help"]

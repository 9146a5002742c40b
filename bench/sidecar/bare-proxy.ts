// Baseline: the barest Node mTLS reverse proxy (node:https + undici Pool.stream), no token, no
// policy, no audit. Tells what the sidecar's own work costs on top of Node's TLS and HTTP.
// Usage: node bare-proxy.ts <certFile> <keyFile> <caFile> <appPort>; prints its port.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import type { Dispatcher } from 'undici';

const [certFile, keyFile, caFile, appPort] = process.argv.slice(2) as [string, string, string, string];
const pool = new Pool(`http://127.0.0.1:${appPort}`, { connections: 128, keepAliveTimeout: 30_000 });
const server = createServer(
  {
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    ca: readFileSync(caFile),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    noDelay: true,
    // As nginx's `keepalive_timeout` in the bench (the sidecar's is 60 s): a load generator's
    // connections idle between two CPU slices (run.ts --cpu-slices) stay open.
    keepAliveTimeout: 120_000,
  },
  (req, res) => {
    pool.stream(
      {
        method: req.method as Dispatcher.HttpMethod,
        path: req.url!,
        headers: req.headers,
        // A request body (run.ts --body-bytes) is streamed up; none is sent for the usual GET.
        body: req.headers['content-length'] || req.headers['transfer-encoding'] ? req : null,
      },
      ({ statusCode, headers }) => {
        res.writeHead(statusCode, headers as Record<string, string>);
        return res;
      },
      (err) => {
        if (err && !res.headersSent) res.writeHead(502).end();
      },
    );
  },
);
server.listen(0, '127.0.0.1', () =>
  console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })),
);
process.on('SIGTERM', () => process.exit(0));

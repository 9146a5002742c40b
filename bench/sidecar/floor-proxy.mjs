// The floor of a Node mTLS reverse proxy: node:https in, a node:http keep-alive agent out, nothing
// else — no token, policy, audit, config, logging or package. Plain JavaScript (no type stripping).
// What this process weighs is what any sidecar written for Node weighs before its own work.
// Usage: node floor-proxy.mjs <certFile> <keyFile> <caFile> <appPort>; prints {"port":N}.
import console from 'node:console';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:https';
import process from 'node:process';

const [certFile, keyFile, caFile, appPort] = process.argv.slice(2);
const agent = new Agent({ keepAlive: true, maxSockets: 128 });
const server = createServer(
  {
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    ca: readFileSync(caFile),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  },
  (req, res) => {
    const up = request(
      { host: '127.0.0.1', port: appPort, method: req.method, path: req.url, headers: req.headers, agent },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  },
);
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
process.on('SIGTERM', () => process.exit(0));

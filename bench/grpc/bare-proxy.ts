// Baseline for the gRPC bench: the barest Node HTTP/2 mTLS proxy — node:http2's secure server
// (TLS 1.3, client certificate required and verified) relaying each stream to the app over one
// h2c session with the core stream API: request headers, body, response headers, body and
// trailers; no token, no policy, no audit, no limits beyond node:http2's defaults. Tells what any
// Node HTTP/2 proxy pays on top of nginx, so the sidecar's own cost is the difference.
// Usage: node bare-proxy.ts <certFile> <keyFile> <caFile> <appPort>; prints its port.
import { readFileSync } from 'node:fs';
import { connect, constants, createSecureServer } from 'node:http2';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';

const [certFile, keyFile, caFile, appPort] = process.argv.slice(2) as [string, string, string, string];
const app = connect(`http://127.0.0.1:${appPort}`);
app.on('error', (err) => {
  console.error(`bare gRPC proxy: app session: ${err.message}`);
  process.exit(1);
});
const HOP = new Set([':status', 'connection', 'keep-alive', 'transfer-encoding']);
const copy = (h: IncomingHttpHeaders) => {
  const out: Record<string, string | string[]> = {};
  for (const k in h) if (!HOP.has(k) && h[k] !== undefined) out[k] = h[k]!;
  return out;
};
const server = createSecureServer({
  cert: readFileSync(certFile),
  key: readFileSync(keyFile),
  ca: readFileSync(caFile),
  requestCert: true,
  rejectUnauthorized: true,
  minVersion: 'TLSv1.3',
});
server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
  const up = app.request(
    {
      ':method': headers[':method'],
      ':path': headers[':path'],
      ':authority': headers[':authority'],
      'content-type': headers['content-type'],
      te: 'trailers',
    },
    { endStream: false },
  );
  up.on('response', (h) =>
    stream.respond({ ':status': h[':status'], ...copy(h) }, { waitForTrailers: true }),
  );
  let trailers: Record<string, string | string[]> = { 'grpc-status': '13' };
  up.on('trailers', (t) => (trailers = copy(t)));
  stream.once('wantTrailers', () => stream.sendTrailers(trailers));
  up.on('error', () => stream.close(constants.NGHTTP2_INTERNAL_ERROR));
  stream.on('error', () => up.close(constants.NGHTTP2_CANCEL));
  stream.pipe(up);
  up.pipe(stream);
});
server.listen(0, '127.0.0.1', () =>
  console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })),
);
process.on('SIGTERM', () => process.exit(0));

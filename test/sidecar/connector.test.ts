import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { createPeerVerifier } from '../../ca/index.ts';
import { createMtlsConnector } from '../../sidecar/tls/connector.ts';
import { makeTestPki } from '../helpers/pki.ts';

test('a handshake that outlasts the timeout fails with the code the caller chose (STS vs peer sidecar)', async () => {
  const pki = await makeTestPki();
  const sockets: Socket[] = [];
  // Accepts TCP and never answers the TLS ClientHello.
  const silent = createServer((s) => void sockets.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const port = (silent.address() as AddressInfo).port;
  const web = pki.leaf('web');
  const verifier = createPeerVerifier({
    trustAnchorsPem: pki.rootPem,
    intermediatesPem: pki.intermediatePem,
    trustDomain: 'example.org',
    purpose: 'serverAuth',
  });
  try {
    for (const timeoutCode of ['ERR_SIDECAR_UPSTREAM_TIMEOUT', 'ERR_SIDECAR_STS_UNAVAILABLE'] as const) {
      const connect = createMtlsConnector({
        material: () => ({ cert: web.certPem, key: web.keyPem, ca: pki.rootPem }),
        verifier: () => verifier,
        expectedId: 'spiffe://example.org/ns/shop/sa/orders',
        timeoutMs: 100,
        timeoutCode,
      });
      const err = await new Promise<Error | null>((resolve) =>
        connect(
          {
            hostname: '127.0.0.1',
            host: `127.0.0.1:${port}`,
            port: String(port),
            protocol: 'https:',
          } as never,
          ((e: Error | null) => resolve(e)) as never,
        ),
      );
      assert.equal((err as Error & { code?: string })?.code, timeoutCode);
    }
  } finally {
    for (const s of sockets) s.destroy();
    silent.close();
    pki.cleanup();
  }
});

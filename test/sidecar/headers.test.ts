import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { responseHeaderList, scanRequestHeaders } from '../../sidecar/inbound/headers.ts';
import { findAuthorization, parseBearer } from '../../sidecar/token/bearer.ts';

const extractBearer = (raw: string[], maxBytes: number) => parseBearer(findAuthorization(raw), maxBytes);

const base = ['Host', 'orders'];

describe('scanRequestHeaders', () => {
  it('strips hop-by-hop, Connection-named, identity, method-override, Host, Authorization and traceparent headers', () => {
    const raw = [
      ...base,
      'Connection',
      'keep-alive, X-Secret',
      'Keep-Alive',
      'timeout=5',
      'TE',
      'trailers',
      'Upgrade',
      'h2c',
      'Proxy-Authorization',
      'Basic x',
      'X-Secret',
      'drop me',
      'Authorization',
      'Bearer a.b.c',
      'X-Portcullis-Peer',
      'spiffe://evil',
      'x_portcullis_peer',
      'spiffe://evil',
      'X_PORTCULLIS-Whatever',
      'x',
      'X-Forwarded-Client-Cert',
      'By=spiffe://evil',
      'x_forwarded_client_cert',
      'By=spiffe://evil',
      'X-SPIFFE-ID',
      'spiffe://evil',
      'X-HTTP-Method-Override',
      'DELETE',
      'X-Http-Method',
      'DELETE',
      'x_method_override',
      'DELETE',
      'traceparent',
      '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      'Accept',
      'application/json',
      'Content-Length',
      '3',
      'X-Request-Id',
      'r1',
    ];
    const s = scanRequestHeaders(raw);
    assert.deepEqual(s.forward, ['Accept', 'application/json', 'Content-Length', '3', 'X-Request-Id', 'r1']);
    // Returned as sent (not forwarded): the outbound side parses it with core's parseTraceparent.
    assert.equal(s.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  });

  const smuggling: [string, string[]][] = [
    ['no Host', []],
    ['two Host headers', ['Host', 'a', 'Host', 'b']],
    ['two Content-Length headers', [...base, 'Content-Length', '3', 'Content-Length', '3']],
    ['a non-numeric Content-Length', [...base, 'Content-Length', '3, 3']],
    [
      'Transfer-Encoding with Content-Length',
      [...base, 'Transfer-Encoding', 'chunked', 'Content-Length', '3'],
    ],
    ['Transfer-Encoding other than chunked', [...base, 'Transfer-Encoding', 'gzip, chunked']],
    [
      'two Transfer-Encoding headers',
      [...base, 'Transfer-Encoding', 'chunked', 'Transfer-Encoding', 'chunked'],
    ],
    ['Connection naming Content-Length', [...base, 'Connection', 'content-length', 'Content-Length', '3']],
  ];
  for (const [name, raw] of smuggling) {
    it(`refuses ${name} with ERR_SIDECAR_REQUEST_MALFORMED`, () => {
      assert.throws(() => scanRequestHeaders(raw), { code: 'ERR_SIDECAR_REQUEST_MALFORMED' });
    });
  }

  it('strips hop-by-hop and Connection-named headers from responses', () => {
    const h: Record<string, string | string[] | undefined> = {
      connection: 'x-a',
      'x-a': '1',
      'keep-alive': 'x',
      'transfer-encoding': 'chunked',
      'content-type': 'text/plain',
    };
    assert.deepEqual(responseHeaderList({ ...h, 'set-cookie': ['a=1', 'b=2'] }), [
      'content-type',
      'text/plain',
      'set-cookie',
      'a=1',
      'set-cookie',
      'b=2',
    ]);
    assert.deepEqual(
      responseHeaderList({ connection: 'keep-alive', 'keep-alive': 'timeout=5', 'x-a': '1' }),
      ['x-a', '1'],
    );
    assert.deepEqual(responseHeaderList({ connection: 'Keep-Alive, X-A', 'x-a': '1', 'x-b': '2' }), [
      'x-b',
      '2',
    ]);
  });
});

describe('findAuthorization and parseBearer', () => {
  const jwt = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln';
  it('returns the one bearer token', () => {
    assert.equal(extractBearer(['Authorization', `Bearer ${jwt}`], 8192), jwt);
    assert.equal(extractBearer(['authorization', `bearer ${jwt}`], 8192), jwt);
  });
  const table: [string, string[], string][] = [
    ['no header', [], 'ERR_SIDECAR_TOKEN_MISSING'],
    [
      'two headers',
      ['Authorization', `Bearer ${jwt}`, 'authorization', `Bearer ${jwt}`],
      'ERR_SIDECAR_TOKEN_MULTIPLE',
    ],
    [
      'two credentials in one header',
      ['Authorization', `Bearer ${jwt}, Bearer ${jwt}`],
      'ERR_SIDECAR_TOKEN_MULTIPLE',
    ],
    ['another scheme', ['Authorization', `Basic dXNlcjpwYXNz`], 'ERR_SIDECAR_TOKEN_MALFORMED'],
    ['a token that is not JWS compact', ['Authorization', 'Bearer abc'], 'ERR_SIDECAR_TOKEN_MALFORMED'],
    [
      'an oversized token',
      ['Authorization', `Bearer ${'a'.repeat(9000)}.b.c`],
      'ERR_SIDECAR_TOKEN_TOO_LARGE',
    ],
  ];
  for (const [name, raw, code] of table) {
    it(`refuses ${name} with ${code}`, () => {
      assert.throws(() => extractBearer(raw, 8192), { code });
    });
  }
});

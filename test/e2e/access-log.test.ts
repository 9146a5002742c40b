// Access logs (issue 19): with `accessLog.enabled`, the sidecar (inbound and outbound) and the STS
// write one pino JSON line per request with the decision, reason, rule, status, latency, caller
// and trace id — and never the token, its claims or a key.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { createLogger } from '../../core/index.ts';
import { startMesh, viaProxy, WEB } from './mesh.ts';
import type { Mesh } from './mesh.ts';

const lines: string[] = [];
let mesh: Mesh;

before(async () => {
  const destination = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      cb();
    },
  });
  mesh = await startMesh({ accessLogger: createLogger({ name: 'e2e', level: 'info', destination }) });
});
after(() => mesh.close());

interface Access {
  side: string;
  method: string;
  target: string;
  status: number;
  decision?: string;
  reason?: string;
  rule?: string;
  caller?: string;
  peer?: string;
  latencyMs: number;
  traceId?: string;
}
const access = (): Access[] =>
  lines
    .map((l) => JSON.parse(l) as { msg: string; access?: Access })
    .filter((l) => l.msg === 'access')
    .map((l) => l.access!);

test('one line per request on each side: decision, reason, rule, status, latency, caller, trace id', async () => {
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const ok = await viaProxy(mesh.web.outbound!.port, 'GET', 'http://orders.shop.internal/orders/7', {
    traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
  });
  assert.equal(ok.status, 200);
  const denied = await viaProxy(
    mesh.web.outbound!.port,
    'POST',
    'http://orders.shop.internal/orders/7',
    {},
    '{}',
  );
  assert.equal(denied.status, 403);
  await new Promise((r) => setTimeout(r, 100));
  const all = access();

  const inbound = all.filter((a) => a.side === 'inbound');
  const allowed = inbound.find((a) => a.method === 'GET' && a.target === '/orders/7')!;
  assert.ok(allowed, JSON.stringify(all));
  assert.equal(allowed.status, 200);
  assert.equal(allowed.decision, 'allow');
  assert.equal(allowed.reason, 'allowed');
  assert.equal(allowed.caller, WEB);
  assert.equal(allowed.traceId, traceId, 'the trace id of the call');
  assert.ok(typeof allowed.rule === 'string' && allowed.rule.length > 0);
  assert.ok(allowed.latencyMs >= 0);
  const refused = inbound.find((a) => a.method === 'POST')!;
  assert.deepEqual(
    [refused.status, refused.decision, refused.reason],
    [403, 'deny', 'ERR_SIDECAR_POLICY_DENIED'],
  );

  const outbound = all.filter((a) => a.side === 'outbound');
  assert.deepEqual(outbound.map((a) => [a.method, a.status, a.peer]).sort(), [
    ['GET', 200, 'spiffe://example.org/ns/shop/sa/orders'],
    ['POST', 403, 'spiffe://example.org/ns/shop/sa/orders'],
  ]);
  const token = all.find((a) => a.side === 'token')!;
  assert.deepEqual(
    [token.method, token.target, token.status, token.decision, token.caller],
    ['POST', '/oauth2/token', 200, 'allow', WEB],
  );
});

test('no line carries a token, a bearer header or key material', () => {
  const text = lines.join('\n');
  assert.doesNotMatch(text, /eyJ[A-Za-z0-9_-]{10,}\./, 'no JWT');
  assert.doesNotMatch(text, /bearer /i);
  assert.doesNotMatch(text, /PRIVATE KEY|"d":/);
});

test('with access logs off (the default) no access line is written', async () => {
  const quietMesh = await startMesh();
  try {
    const before = lines.length;
    assert.equal(
      (await viaProxy(quietMesh.web.outbound!.port, 'GET', 'http://orders.shop.internal/orders/1')).status,
      200,
    );
    assert.equal(lines.length, before);
  } finally {
    await quietMesh.close();
  }
});

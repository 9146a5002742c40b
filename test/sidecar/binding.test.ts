import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bindingLayer } from '../../sidecar/inbound/layers/binding.ts';
import type { InboundContext } from '../../sidecar/inbound/context.ts';

const WEB = 'spiffe://example.org/ns/shop/sa/web';
const ADMIN = 'spiffe://example.org/ns/ops/sa/admin-console';
const T1 = 'a'.repeat(43);
const T2 = 'b'.repeat(43);

const peer = (uri: string, thumbprint: string) => ({ spiffeId: { uri }, thumbprint });
const verified = { kid: 'k1', claims: { sub: WEB, cnf: { 'x5t#S256': T1 } } };
const ctx = (p: ReturnType<typeof peer>) => ({ peer: p, verified }) as unknown as InboundContext;
const notBound = { code: 'ERR_SIDECAR_TOKEN_NOT_BOUND' };

describe('binding layer', () => {
  it('passes a token whose sub and cnf name the peer, on every request of the connection', () => {
    const layer = bindingLayer();
    const web = peer(WEB, T1);
    layer(ctx(web));
    layer(ctx(web));
    layer(ctx(peer(WEB, T1)));
  });

  it('refuses the same verified token on another certificate or identity after it passed on its own', () => {
    const layer = bindingLayer();
    layer(ctx(peer(WEB, T1)));
    assert.throws(() => layer(ctx(peer(WEB, T2))), notBound);
    assert.throws(() => layer(ctx(peer(ADMIN, T1))), notBound);
    // A refusal is not remembered as a pass either.
    const other = peer(WEB, T2);
    assert.throws(() => layer(ctx(other)), notBound);
    assert.throws(() => layer(ctx(other)), notBound);
  });
});

/** Splits a PEM bundle into the DER of each `CERTIFICATE` block, in order. Other blocks are ignored. */
export function splitPemBundle(pemText: string): Uint8Array[] {
  if (typeof pemText !== 'string') throw new TypeError('"pemText" must be a string');
  const out: Uint8Array[] = [];
  const re = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----/g;
  for (const m of pemText.matchAll(re))
    out.push(new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')));
  return out;
}

/** The certificates after the first (the leaf) in a PEM chain, as PEM: the chain's intermediates. */
export function chainIntermediatesPem(chainPem: string): string {
  const blocks = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks
    .slice(1)
    .map((b) => `${b}\n`)
    .join('');
}

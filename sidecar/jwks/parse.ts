import { importJWK } from 'jose';
import type { JWK } from 'jose';
import { TOKEN_ALGORITHMS } from '../../core/index.ts';
import type { TokenAlgorithm } from '../../core/index.ts';
import { SidecarError } from '../errors.ts';

/** One verification key of the STS, imported once. */
export interface VerificationKey {
  readonly kid: string;
  readonly alg: TokenAlgorithm;
  readonly key: CryptoKey | Uint8Array;
}

const MAX_KEYS = 32;
const KID = /^[A-Za-z0-9._~-]{1,128}$/;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'];

/**
 * Parses and imports a JWKS document, all or nothing: any key that is not a public signing key
 * of an allowed algorithm (ES256 on P-256, EdDSA on Ed25519), carries private or symmetric
 * material, lacks a `kid` or repeats one, or fails to import refuses the whole set with
 * `ERR_SIDECAR_JWKS_INVALID` — a half-understood key set is never put in service.
 */
export async function parseJwks(document: unknown): Promise<Map<string, VerificationKey>> {
  if (document === null || typeof document !== 'object' || Array.isArray(document))
    throw invalid('document is not a JSON object');
  const keys = (document as { keys?: unknown }).keys;
  if (!Array.isArray(keys) || keys.length === 0) throw invalid('"keys" must be a non-empty array');
  if (keys.length > MAX_KEYS) throw invalid(`more than ${MAX_KEYS} keys`);
  const out = new Map<string, VerificationKey>();
  for (const [i, raw] of keys.entries()) {
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
      throw invalid(`keys[${i}] is not an object`);
    const jwk = raw as JWK & Record<string, unknown>;
    if (typeof jwk.kid !== 'string' || !KID.test(jwk.kid)) throw invalid(`keys[${i}] has no valid "kid"`);
    if (out.has(jwk.kid)) throw invalid(`keys[${i}] repeats kid "${jwk.kid}"`);
    if (PRIVATE_MEMBERS.some((m) => m in jwk))
      throw invalid(`keys[${i}] carries private or symmetric key material`);
    if (jwk.use !== undefined && jwk.use !== 'sig') throw invalid(`keys[${i}] is not a signing key`);
    const alg = algorithmOf(jwk);
    if (!alg) throw invalid(`keys[${i}] is not an ES256 (P-256) or EdDSA (Ed25519) public key`);
    let key: CryptoKey | Uint8Array;
    try {
      key = await importJWK({ ...jwk, alg }, alg);
    } catch (err) {
      throw invalid(`keys[${i}] does not import: ${(err as Error).message}`, err);
    }
    out.set(jwk.kid, Object.freeze({ kid: jwk.kid, alg, key }));
  }
  return out;
}

function algorithmOf(jwk: JWK): TokenAlgorithm | undefined {
  const inferred =
    jwk.kty === 'EC' && jwk.crv === 'P-256'
      ? 'ES256'
      : jwk.kty === 'OKP' && jwk.crv === 'Ed25519'
        ? 'EdDSA'
        : undefined;
  if (!inferred) return undefined;
  if (jwk.alg !== undefined && jwk.alg !== inferred) return undefined;
  return (TOKEN_ALGORITHMS as readonly string[]).includes(inferred) ? inferred : undefined;
}

function invalid(why: string, cause?: unknown): SidecarError {
  return new SidecarError('ERR_SIDECAR_JWKS_INVALID', `JWKS refused: ${why}`, { cause });
}

import { z } from 'zod';
import { StsError } from '../errors.ts';
import type { KeyRecord, KeyringState } from '../keyring/state.ts';

const b64u = z.string().regex(/^[A-Za-z0-9_-]+$/);
const publicJwkSchema = z.object({ kty: z.literal('EC'), crv: z.literal('P-256'), x: b64u, y: b64u });
const privateJwkSchema = publicJwkSchema.extend({ d: b64u });

const recordShape = {
  kid: b64u,
  alg: z.literal('ES256'),
  state: z.enum(['next', 'current', 'retiring']),
  publishedAt: z.number().int().nonnegative(),
  activatedAt: z.number().int().nonnegative().optional(),
  retiredAt: z.number().int().nonnegative().optional(),
  publicJwk: publicJwkSchema,
};

/** Format tag written with every stored keyring so that a future layout can be told apart. */
export const KEYRING_FORMAT = 'portcullis-sts-keyring/1';

/** Stored keyring with plaintext private keys (memory and vault keystores). */
export const plainKeyringSchema = z.object({
  format: z.literal(KEYRING_FORMAT),
  rotateRequestedAt: z.number().int().nonnegative().optional(),
  keys: z.array(z.object({ ...recordShape, privateJwk: privateJwkSchema })),
});

/** Stored keyring whose private keys are sealed (file keystore). */
export const sealedKeyringSchema = z.object({
  format: z.literal(KEYRING_FORMAT),
  version: z.number().int().positive(),
  rotateRequestedAt: z.number().int().nonnegative().optional(),
  keys: z.array(z.object({ ...recordShape, sealed: z.object({ iv: b64u, ciphertext: b64u, tag: b64u }) })),
});

/** Turns a keyring into the plain stored form. */
export function encodeKeyring(state: KeyringState): z.input<typeof plainKeyringSchema> {
  return {
    format: KEYRING_FORMAT,
    ...(state.rotateRequestedAt !== undefined ? { rotateRequestedAt: state.rotateRequestedAt } : {}),
    keys: state.keys.map((k) => ({
      kid: k.kid,
      alg: k.alg,
      state: k.state,
      publishedAt: k.publishedAt,
      ...(k.activatedAt !== undefined ? { activatedAt: k.activatedAt } : {}),
      ...(k.retiredAt !== undefined ? { retiredAt: k.retiredAt } : {}),
      publicJwk: k.publicJwk as z.input<typeof publicJwkSchema>,
      privateJwk: k.privateJwk as z.input<typeof privateJwkSchema>,
    })),
  };
}

/** Parses the plain stored form; anything malformed is `ERR_STS_KEYSTORE_CORRUPT` naming `where`. */
export function decodeKeyring(value: unknown, where: string): KeyringState {
  const parsed = plainKeyringSchema.safeParse(value);
  if (!parsed.success) throw corrupt(where, parsed.error);
  return toState(parsed.data.keys, parsed.data.rotateRequestedAt);
}

/** Builds a {@link KeyringState} from validated records. */
export function toState(keys: readonly KeyRecord[], rotateRequestedAt: number | undefined): KeyringState {
  return rotateRequestedAt === undefined ? { keys: [...keys] } : { keys: [...keys], rotateRequestedAt };
}

/** The error for a stored keyring that does not parse. */
export function corrupt(where: string, error: z.ZodError): StsError {
  const issue = error.issues[0]!;
  return new StsError(
    'ERR_STS_KEYSTORE_CORRUPT',
    `${where}: ${issue.path.join('.') || '(root)'}: ${issue.message}`,
  );
}

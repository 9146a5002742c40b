// The OpenAPI description of every STS route (decision 0058): request parts and one response per
// status, attached to each route as `config.doc` and turned into /openapi.json by @fastify/swagger.
// Where a zod schema validates a request part (admin revoke, join tokens), the document holds
// that schema's own JSON Schema; the token form and the EST bodies are parsed by hand
// (sts/token/parse-request.ts, routes/est.ts) and described here as those parsers accept them.
import type { z } from 'zod';
import {
  ACCESS_TOKEN_TYPE_URI,
  LIVENESS_SCHEMA,
  READINESS_SCHEMA,
  TOKEN_EXCHANGE_GRANT,
  fromZod,
  jsonResponse,
  textResponse,
} from '../../core/index.ts';
import type { JsonSchema, ResponseDoc, RouteDoc } from '../../core/index.ts';
import { HTTP_ERRORS } from '../errors.ts';

const str: JsonSchema = { type: 'string' };
const time: JsonSchema = { type: 'string', format: 'date-time' };

/** Every error body: RFC 6749 §5.2, `error` one of the codes the STS answers with. */
export const STS_ERROR_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['error', 'error_description'],
  properties: {
    error: { enum: [...new Set(Object.values(HTTP_ERRORS).map((e) => e.error))].sort() },
    error_description: str,
  },
};
const serverErrors: Record<string, ResponseDoc> = {
  '5XX': jsonResponse('the STS cannot serve the request now: RFC 6749 error body', STS_ERROR_SCHEMA),
};
const errors: Record<string, ResponseDoc> = {
  '4XX': jsonResponse('refused: RFC 6749 error body (docs/sts.md, Errors)', STS_ERROR_SCHEMA),
  ...serverErrors,
};

const keySummary: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['kid', 'alg', 'state', 'publishedAt'],
  properties: {
    kid: str,
    alg: str,
    state: { enum: ['next', 'current', 'retiring'] },
    publishedAt: time,
    activatedAt: time,
    retiredAt: time,
    until: time,
  },
};
const keyList: JsonSchema = { type: 'array', items: keySummary };
const entry = (name: 'jti' | 'serial'): JsonSchema => ({
  type: 'object',
  additionalProperties: false,
  required: [name, 'expiresAt'],
  properties: { [name]: str, expiresAt: time },
});
const PKCS7 = 'application/pkcs7-mime';
/** 304 to a matching If-None-Match: no body. */
const NOT_MODIFIED: ResponseDoc = { description: 'unchanged since the ETag sent', type: 'null' };
const pkcs7 = (what: string) =>
  textResponse(`${what}: a certs-only CMS SignedData, base64 (RFC 7030 §4.1.3)`, PKCS7);
/** `/healthz`, `/readyz` as every server answers them (core/health.ts). */
const HEALTH_DOCS = {
  healthz: {
    summary: 'Liveness: 200 while the process serves',
    tags: ['health'],
    response: {
      200: jsonResponse('alive', LIVENESS_SCHEMA),
    },
  },
  readyz: {
    summary: 'Readiness: 200 when every check passes, else 503 naming the failing checks',
    tags: ['health'],
    response: {
      200: jsonResponse('ready', READINESS_SCHEMA),
      503: jsonResponse('not ready', READINESS_SCHEMA),
    },
  },
} satisfies Record<string, RouteDoc>;

/** The docs of the STS's own routes, given the zod schemas its handlers validate with. */
export function stsRouteDocs(schemas: { readonly revokeBody: z.ZodType }) {
  return {
    token: {
      summary: 'Issue an access token bound to the caller certificate (RFC 6749 §4.4, RFC 8693, RFC 8705)',
      tags: ['token'],
      consumes: ['application/x-www-form-urlencoded'],
      body: {
        type: 'object',
        required: ['grant_type', 'audience'],
        properties: {
          grant_type: { enum: ['client_credentials', TOKEN_EXCHANGE_GRANT] },
          audience: { ...str, description: 'the one SPIFFE ID the token is for' },
          expires_in: { type: 'string', pattern: '^[0-9]+$', description: 'seconds asked for' },
          client_id: { ...str, description: 'when sent, the caller SPIFFE ID' },
          subject_token: str,
          subject_token_type: str,
          requested_token_type: str,
          scope: str,
        },
      },
      response: {
        200: jsonResponse('the token', {
          type: 'object',
          additionalProperties: false,
          required: ['access_token', 'token_type', 'expires_in', 'issued_token_type'],
          properties: {
            access_token: str,
            token_type: { const: 'Bearer' },
            expires_in: { type: 'integer', minimum: 1 },
            issued_token_type: { const: ACCESS_TOKEN_TYPE_URI },
          },
        }),
        ...errors,
      },
    },
    jwks: {
      summary: 'The signing keys (next, current, retiring) as a JWK set',
      tags: ['discovery'],
      headers: { type: 'object', properties: { 'if-none-match': str } },
      response: {
        200: jsonResponse(
          'the key set',
          {
            type: 'object',
            required: ['keys'],
            properties: {
              keys: {
                type: 'array',
                items: { type: 'object', required: ['kty', 'kid', 'alg', 'use'], properties: { kid: str } },
              },
            },
          },
          'application/jwk-set+json',
        ),
        304: NOT_MODIFIED,
        ...serverErrors,
      },
    },
    metadata: {
      summary: 'Authorization server metadata (RFC 8414)',
      tags: ['discovery'],
      response: {
        200: jsonResponse('the metadata', {
          type: 'object',
          required: ['issuer', 'token_endpoint', 'jwks_uri', 'grant_types_supported'],
          properties: {
            issuer: str,
            token_endpoint: str,
            jwks_uri: str,
            grant_types_supported: { type: 'array', items: str },
            token_endpoint_auth_methods_supported: { type: 'array', items: str },
            response_types_supported: { type: 'array', items: str },
            tls_client_certificate_bound_access_tokens: { type: 'boolean' },
          },
        }),
        ...serverErrors,
      },
    },
    revocations: {
      summary: 'The deny-list of token ids and certificate serials (registered workloads)',
      tags: ['revocations'],
      headers: { type: 'object', properties: { 'if-none-match': str } },
      response: {
        200: jsonResponse('the deny-list', {
          type: 'object',
          additionalProperties: false,
          required: ['jtis', 'serials'],
          properties: {
            jtis: { type: 'array', items: entry('jti') },
            serials: { type: 'array', items: entry('serial') },
          },
        }),
        304: NOT_MODIFIED,
        ...errors,
      },
    },
    keys: {
      summary: 'List the signing keys and their state (role admin)',
      tags: ['admin'],
      response: {
        200: jsonResponse('the keys', {
          type: 'object',
          additionalProperties: false,
          required: ['keys'],
          properties: { keys: keyList },
        }),
        ...errors,
      },
    },
    rotate: {
      summary:
        'Rotate the signing key now, or as soon as the next key has been published long enough (role admin)',
      tags: ['admin'],
      response: {
        200: jsonResponse('rotated, or the time it will', {
          type: 'object',
          additionalProperties: false,
          required: ['rotated', 'currentKid', 'keys'],
          properties: { rotated: { type: 'boolean' }, currentKid: str, activatesAt: time, keys: keyList },
        }),
        ...errors,
      },
    },
    revoke: {
      summary: 'Revoke a token id or a certificate serial, durably (role admin)',
      tags: ['admin'],
      body: fromZod(schemas.revokeBody),
      response: {
        200: jsonResponse('the entry on the deny-list', {
          type: 'object',
          additionalProperties: false,
          required: ['revoked'],
          properties: { revoked: { oneOf: [entry('jti'), entry('serial')] } },
        }),
        ...errors,
      },
    },
    healthz: HEALTH_DOCS.healthz,
    readyz: HEALTH_DOCS.readyz,
    metrics: {
      summary: 'Prometheus metrics (registered workloads)',
      tags: ['health'],
      response: { 200: textResponse('the exposition', 'text/plain'), ...errors },
    },
  } satisfies Record<string, RouteDoc>;
}

/** The doc of `POST /v1/admin/join-tokens`, given the zod schema its handler validates with. */
export function joinTokenDoc(body: z.ZodType): RouteDoc {
  return {
    summary: 'Create a single-use join token for one registry entry (role admin)',
    tags: ['admin', 'est'],
    body: fromZod(body),
    response: {
      200: jsonResponse('the token (shown once)', {
        type: 'object',
        additionalProperties: false,
        required: ['token', 'workload', 'spiffeId', 'expiresAt'],
        properties: { token: str, workload: str, spiffeId: str, expiresAt: time },
      }),
      ...errors,
    },
  };
}

/** The docs of the EST routes (RFC 7030). */
export const EST_DOCS = {
  cacerts: {
    summary: 'The CA certificates (EST cacerts)',
    tags: ['est'],
    response: { 200: pkcs7('the intermediate and root'), ...errors },
  },
  simpleenroll: {
    summary: 'Enrol with a join token: CSR in, certificate out (EST simpleenroll)',
    tags: ['est'],
    consumes: ['application/pkcs10'],
    headers: {
      type: 'object',
      required: ['authorization'],
      properties: { authorization: { type: 'string', pattern: '^Bearer ' } },
    },
    body: { type: 'string', description: 'a PKCS#10 CSR, DER in base64' },
    response: { 200: pkcs7('the new leaf and the intermediate'), ...errors },
  },
  simplereenroll: {
    summary: 'Renew over mTLS with the current certificate (EST simplereenroll)',
    tags: ['est'],
    consumes: ['application/pkcs10'],
    body: { type: 'string', description: 'a PKCS#10 CSR, DER in base64' },
    response: { 200: pkcs7('the renewed leaf and the intermediate'), ...errors },
  },
} satisfies Record<string, RouteDoc>;

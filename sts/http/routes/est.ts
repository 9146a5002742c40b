import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { CaError, certsOnlyPkcs7, issueFromCsr, splitPemBundle } from '../../../ca/index.ts';
import type { SigningCa } from '../../../ca/index.ts';
import type { AuditEvent, Registry, Workload } from '../../../core/index.ts';
import { StsError } from '../../errors.ts';
import type { RateLimiter } from '../../rate-limit.ts';
import type { StsStateStore } from '../../state/store.ts';
import type { StsPeer } from '../peer.ts';
import { EST_DOCS } from '../route-docs.ts';

/** The online CA the EST routes sign with. */
export interface EstCa {
  readonly signer: SigningCa;
  readonly trustDomain: string;
  /** PEM of what `cacerts` serves: the trust anchors and the intermediate(s), read per request. */
  readonly caCertsPem: () => string;
  /** Cap over each entry's `svidTtl`. */
  readonly svidTtlCapMs: number;
}

/** What the EST plugin needs from the app that registers it. */
export interface EstRouteDeps {
  readonly ca: EstCa | undefined;
  readonly registry: Registry;
  readonly state: StsStateStore;
  /** Per-identity limiter of enrolments and renewals. */
  readonly limiter: RateLimiter;
  readonly clock: { now(): number };
  readonly accepting: () => boolean;
  /**
   * Audits an issuance; awaited before the certificate leaves, so a sink that records durably
   * (and rejects when it cannot) keeps an unrecorded certificate from being handed out.
   */
  readonly emit: (event: Omit<AuditEvent, 'time'>) => void | Promise<void>;
  readonly latency: (req: FastifyRequest) => number;
  readonly callerOf: (req: FastifyRequest) => { readonly peer: StsPeer; readonly workload: Workload };
  /** Records who a refused, not mTLS-authenticated request claimed to be, for its audit event. */
  readonly claim: (req: FastifyRequest, subject: string) => void;
}

/** A join token: `pjt.` and 32 random bytes in base64url. */
export const JOIN_TOKEN = /^pjt\.[A-Za-z0-9_-]{43}$/;
/** The stored id of a join token: hex SHA-256 of its text. */
export const joinTokenId = (token: string) => createHash('sha256').update(token).digest('hex');

const PKCS7 = 'application/pkcs7-mime; smime-type=certs-only';
const BASE64 = /^[A-Za-z0-9+/=\s]+$/;

/**
 * EST (RFC 7030) on the STS listener: `GET /.well-known/est/cacerts` (public), `POST
 * simpleenroll` (bootstrap: no client certificate, a one-time join token as `Authorization:
 * Bearer`) and `POST simplereenroll` (renewal: mTLS with the current certificate, checked like
 * every workload route in the app's onRequest hook). Bodies are base64 DER: a PKCS#10 request in,
 * a certs-only PKCS#7 (the new leaf, then the intermediate) out. Names come from the registry
 * entry only (ca/issue-from-csr.ts); every issuance is a `cert.issued` audit event.
 */
export function estRoutes(deps: EstRouteDeps) {
  return async function register(app: FastifyInstance): Promise<void> {
    const { registry, state, limiter, clock } = deps;
    app.addContentTypeParser('application/pkcs10', { parseAs: 'string' }, (_req, body, done) =>
      done(null, body),
    );

    const requireCa = (): EstCa => {
      if (!deps.ca)
        throw new StsError(
          'ERR_STS_CA_NOT_CONFIGURED',
          'this STS does not issue certificates (no ca: section)',
        );
      return deps.ca;
    };
    const csrOf = (req: FastifyRequest): Uint8Array => {
      if (
        typeof req.body !== 'string' ||
        (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase() !== 'application/pkcs10'
      )
        throw new StsError(
          'ERR_STS_MEDIA_TYPE_UNSUPPORTED',
          'the body must be an application/pkcs10 request in base64',
        );
      if (!BASE64.test(req.body)) throw new StsError('ERR_STS_CSR_INVALID', 'the body is not base64');
      return new Uint8Array(Buffer.from(req.body.replace(/\s+/g, ''), 'base64'));
    };
    const limit = (spiffeId: string) => {
      const wait = limiter.take(spiffeId);
      if (wait > 0)
        throw new StsError('ERR_STS_RATE_LIMITED', 'too many enrolments for this identity', {
          retryAfterSeconds: wait,
        });
    };
    const issue = async (ca: EstCa, csrDer: Uint8Array, workload: Workload) => {
      try {
        return await issueFromCsr({
          csrDer,
          workload,
          issuer: ca.signer,
          trustDomain: ca.trustDomain,
          validityMs: Math.min(workload.svidTtlMs, ca.svidTtlCapMs),
          deps: { now: () => new Date(clock.now()) },
        });
      } catch (err) {
        if (!(err instanceof CaError)) throw err;
        throw new StsError(
          err.code === 'ERR_CA_CSR_IDENTITY' ? 'ERR_STS_CSR_IDENTITY' : 'ERR_STS_CSR_INVALID',
          err.message,
          {
            reason: err.code,
            cause: err,
          },
        );
      }
    };
    const answer = async (
      req: FastifyRequest,
      reply: FastifyReply,
      ca: EstCa,
      workload: Workload,
      issued: Awaited<ReturnType<typeof issue>>,
      how: Record<string, string>,
    ) => {
      await deps.emit({
        type: 'cert.issued',
        subject: workload.spiffeId.uri,
        target: issued.serial,
        action: `POST ${req.routeOptions.url}`,
        decision: 'allow',
        reason: 'issued',
        status: 200,
        latencyMs: deps.latency(req),
        attributes: {
          serial: issued.serial,
          notBefore: issued.notBefore.toISOString(),
          notAfter: issued.notAfter.toISOString(),
          keyThumbprint: issued.keyThumbprint,
          workload: workload.name,
          ...how,
        },
      });
      const pkcs7 = certsOnlyPkcs7([issued.certDer, new Uint8Array(ca.signer.cert.rawData)]);
      return sendPkcs7(reply, pkcs7);
    };

    const cacerts = { config: { kind: 'public', doc: EST_DOCS.cacerts } };
    app.get('/.well-known/est/cacerts', cacerts, (_req, reply) => {
      const ca = requireCa();
      return sendPkcs7(reply, certsOnlyPkcs7(uniqueDer(splitPemBundle(ca.caCertsPem()))));
    });

    const enrol = { config: { kind: 'enrol', doc: EST_DOCS.simpleenroll } };
    app.post('/.well-known/est/simpleenroll', enrol, async (req, reply) => {
      const ca = requireCa();
      const auth = req.headers.authorization;
      const match = typeof auth === 'string' ? /^Bearer +(\S+)$/i.exec(auth) : null;
      if (!match) {
        reply.header('www-authenticate', 'Bearer realm="est"');
        throw new StsError(
          'ERR_STS_JOIN_TOKEN_INVALID',
          'a join token is required (Authorization: Bearer pjt.…)',
          {
            reason: 'ERR_STS_JOIN_TOKEN_MISSING',
          },
        );
      }
      if (!JOIN_TOKEN.test(match[1]!))
        throw new StsError('ERR_STS_JOIN_TOKEN_INVALID', 'the join token is malformed', {
          reason: 'ERR_STS_JOIN_TOKEN_MALFORMED',
        });
      const id = joinTokenId(match[1]!);
      const found = await state.findJoinToken(id);
      const now = clock.now();
      if (found) deps.claim(req, found.record.spiffeId);
      const refuse = (why: 'unknown' | 'used' | 'expired') =>
        new StsError(
          'ERR_STS_JOIN_TOKEN_INVALID',
          `the join token is ${why === 'unknown' ? 'not known' : why === 'used' ? 'already used' : 'expired'}`,
          {
            reason: `ERR_STS_JOIN_TOKEN_${why.toUpperCase()}`,
          },
        );
      if (!found) throw refuse('unknown');
      if (found.usedAt !== undefined) throw refuse('used');
      if (found.record.expiresAt <= now) throw refuse('expired');
      const workload = registry.byName(found.record.workload);
      if (!workload || workload.spiffeId.uri !== found.record.spiffeId)
        throw new StsError(
          'ERR_STS_CLIENT_NOT_REGISTERED',
          `${found.record.spiffeId} is no longer a registered workload`,
        );
      limit(workload.spiffeId.uri);
      if (!deps.accepting())
        throw new StsError(
          'ERR_STS_AUDIT_UNAVAILABLE',
          'the audit log cannot take events; refusing to act unrecorded',
        );
      const csrDer = csrOf(req);
      // Everything about the request is checked before the token is spent: a typo in the CSR does
      // not burn it. Redemption is atomic, so a token raced by two requests enrols one.
      const issued = await issue(ca, csrDer, workload);
      const redeemed = await state.redeemJoinToken(id, clock.now());
      if (!redeemed.ok) throw refuse(redeemed.reason);
      return answer(req, reply, ca, workload, issued, { auth: 'join-token', joinToken: id.slice(0, 16) });
    });

    const renew = { config: { kind: 'workload', doc: EST_DOCS.simplereenroll } };
    app.post('/.well-known/est/simplereenroll', renew, async (req, reply) => {
      const ca = requireCa();
      const { peer, workload } = deps.callerOf(req);
      limit(workload.spiffeId.uri);
      const issued = await issue(ca, csrOf(req), workload);
      return answer(req, reply, ca, workload, issued, { auth: 'mtls', previousSerial: peer.serial });
    });
  };
}

function sendPkcs7(reply: FastifyReply, der: Uint8Array) {
  const b64 = Buffer.from(der)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n');
  return reply
    .header('cache-control', 'no-store')
    .header('content-transfer-encoding', 'base64')
    .type(PKCS7)
    .send(b64.endsWith('\n') ? b64 : b64 + '\n');
}

function uniqueDer(ders: Uint8Array[]): Uint8Array[] {
  const seen = new Set<string>();
  return ders.filter((d) => {
    const k = Buffer.from(d).toString('base64');
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

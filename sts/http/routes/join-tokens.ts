import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { joinTokenDoc } from '../route-docs.ts';
import { durationSchema } from '../../../core/index.ts';
import type { AuditEvent, Registry, Workload } from '../../../core/index.ts';
import { StsError } from '../../errors.ts';
import type { StsStateStore } from '../../state/store.ts';
import type { StsPeer } from '../peer.ts';
import { joinTokenId } from './est.ts';

/** What the join-token admin route needs from the app. */
export interface JoinTokenRouteDeps {
  readonly registry: Registry;
  readonly state: StsStateStore;
  readonly clock: { now(): number };
  /** Longest token an admin may create. */
  readonly ttlCapMs: number;
  readonly randomBytes?: (n: number) => Uint8Array;
  readonly callerOf: (req: FastifyRequest) => { readonly peer: StsPeer; readonly workload: Workload };
  readonly adminAllowed: (req: FastifyRequest, action: string, extra?: Partial<AuditEvent>) => void;
}

/** Join tokens last 15 minutes unless the admin asks otherwise. */
export const DEFAULT_JOIN_TOKEN_TTL_MS = 15 * 60_000;

const bodySchema = z.strictObject({
  workload: z.string().min(1).max(63),
  ttl: durationSchema.optional(),
});

/**
 * `POST /v1/admin/join-tokens` (role admin, checked by the app's onRequest hook): creates a
 * single-use join token for one registry entry. The answer is the only place the token's text
 * ever appears; the store keeps its SHA-256, the audit event a prefix of that.
 */
export function joinTokenRoutes(deps: JoinTokenRouteDeps) {
  return async function register(app: FastifyInstance): Promise<void> {
    const random = deps.randomBytes ?? randomBytes;
    const options = { config: { kind: 'admin', doc: joinTokenDoc(bodySchema) } };
    app.post('/v1/admin/join-tokens', options, async (req, reply) => {
      if (req.body === null || typeof req.body !== 'object')
        throw new StsError('ERR_STS_REQUEST_INVALID', 'the body must be a JSON object');
      const parsed = bodySchema.safeParse(req.body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new StsError('ERR_STS_REQUEST_INVALID', `${issue.path.join('.') || 'body'}: ${issue.message}`);
      }
      const workload = deps.registry.byName(parsed.data.workload);
      if (!workload)
        throw new StsError(
          'ERR_STS_REQUEST_INVALID',
          `workload: "${parsed.data.workload}" is not a registry entry`,
        );
      const ttl = parsed.data.ttl ?? DEFAULT_JOIN_TOKEN_TTL_MS;
      if (ttl <= 0 || ttl > deps.ttlCapMs)
        throw new StsError(
          'ERR_STS_REQUEST_INVALID',
          `ttl: must be positive and at most ${Math.floor(deps.ttlCapMs / 60_000)}m`,
        );
      const token = `pjt.${Buffer.from(random(32)).toString('base64url')}`;
      const id = joinTokenId(token);
      const now = deps.clock.now();
      await deps.state.addJoinToken({
        id,
        workload: workload.name,
        spiffeId: workload.spiffeId.uri,
        createdAt: now,
        expiresAt: now + ttl,
        createdBy: deps.callerOf(req).peer.spiffeId.uri,
      });
      const expiresAt = new Date(now + ttl).toISOString();
      deps.adminAllowed(req, 'POST /v1/admin/join-tokens', {
        target: workload.spiffeId.uri,
        attributes: { joinToken: id.slice(0, 16), workload: workload.name, expiresAt },
      });
      return reply
        .header('cache-control', 'no-store')
        .send({ token, workload: workload.name, spiffeId: workload.spiffeId.uri, expiresAt });
    });
  };
}

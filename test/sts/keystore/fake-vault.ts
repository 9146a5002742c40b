// A small HTTP server with the KV v2 semantics the vault keystore relies on: versioned writes,
// check-and-set (`options.cas`, 400 on mismatch), reads of the latest live version, metadata,
// and soft delete of the latest version. No Vault binary can be installed here (see docs/sts.md).
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';

interface Version {
  readonly data: unknown;
  readonly created: string;
  deleted: string;
}

/** A running fake Vault: its address, the token it accepts, and counters for assertions. */
export interface FakeVault {
  readonly address: string;
  readonly token: string;
  /** How many writes were refused for a check-and-set mismatch. */
  casConflicts: number;
  close(): Promise<void>;
}

/**
 * Starts the fake on 127.0.0.1, port 0, serving one KV v2 mount. `before`, when given, is awaited
 * before each request is answered (a Vault that is slow to answer, for start-up tests).
 */
export async function startFakeVault(
  mount = 'secret',
  token = 'test-root-token',
  before?: () => Promise<void>,
): Promise<FakeVault> {
  const secrets = new Map<string, Version[]>();
  const state: FakeVault = { address: '', token, casConflicts: 0, close: async () => {} };
  const send = (res: ServerResponse, status: number, body?: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(body === undefined ? '' : JSON.stringify(body));
  };
  const readBody = async (req: IncomingMessage): Promise<unknown> => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString();
    return text ? JSON.parse(text) : {};
  };
  const server = createServer((req, res) => {
    void (async () => {
      await before?.();
      if (req.headers['x-vault-token'] !== token) return send(res, 403, { errors: ['permission denied'] });
      const url = new URL(req.url ?? '/', 'http://x');
      const m = /^\/v1\/([^/]+)\/(data|metadata)\/(.+)$/.exec(url.pathname);
      if (!m || m[1] !== mount) return send(res, 404, { errors: [] });
      const [, , kind, path] = m;
      const versions = secrets.get(path!) ?? [];
      const current = versions.length;
      if (kind === 'metadata' && req.method === 'GET') {
        if (current === 0) return send(res, 404, { errors: [] });
        return send(res, 200, {
          data: {
            current_version: current,
            oldest_version: 1,
            versions: Object.fromEntries(
              versions.map((v, i) => [
                String(i + 1),
                { created_time: v.created, deletion_time: v.deleted, destroyed: false },
              ]),
            ),
          },
        });
      }
      if (kind !== 'data') return send(res, 405, { errors: ['unsupported operation'] });
      if (req.method === 'GET') {
        const latest = versions[current - 1];
        if (!latest || latest.deleted) return send(res, 404, { errors: [] });
        return send(res, 200, {
          data: {
            data: latest.data,
            metadata: { version: current, created_time: latest.created, deletion_time: '', destroyed: false },
          },
        });
      }
      if (req.method === 'POST' || req.method === 'PUT') {
        const body = (await readBody(req)) as { options?: { cas?: unknown }; data?: unknown };
        if (body.data === undefined || typeof body.data !== 'object')
          return send(res, 400, { errors: ['no data provided'] });
        const cas = body.options?.cas;
        if (cas !== undefined && cas !== current) {
          state.casConflicts++;
          return send(res, 400, { errors: ['check-and-set parameter did not match the current version'] });
        }
        const created = new Date().toISOString();
        secrets.set(path!, [...versions, { data: body.data, created, deleted: '' }]);
        return send(res, 200, {
          data: { version: current + 1, created_time: created, deletion_time: '', destroyed: false },
        });
      }
      if (req.method === 'DELETE') {
        const latest = versions[current - 1];
        if (latest) latest.deleted = new Date().toISOString();
        return send(res, 204);
      }
      return send(res, 405, { errors: ['unsupported operation'] });
    })().catch(() => send(res, 500, { errors: ['internal error'] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  Object.assign(state, {
    address: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
  return state;
}

// Checks a server against its OpenAPI document (decision 0058): the document it serves equals the
// one kept in docs/api/ (PORTCULLIS_WRITE_OPENAPI=1 rewrites that file), every operation has a
// schema for each response it documents, and real responses — from a table of requests the test
// gives for every operation the server has — match the document: status documented, media type
// documented, body valid against the schema (ajv, JSON Schema 2020-12 as OpenAPI 3.1 uses).
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { request } from 'undici';
import type { Dispatcher } from 'undici';

const ROOT = new URL('../../', import.meta.url).pathname;

interface MediaDoc {
  readonly schema?: Record<string, unknown>;
}
interface ResponseDoc {
  readonly description: string;
  readonly content?: Record<string, MediaDoc>;
}
export interface OpenApiDocument {
  readonly openapi: string;
  readonly info: { readonly title: string; readonly version: string };
  readonly paths: Record<string, Record<string, { readonly responses: Record<string, ResponseDoc> }>>;
}

/** One real request of the table: who sends what, and the status it must get. */
export interface ApiCase {
  readonly name: string;
  readonly dispatcher: Dispatcher;
  readonly path?: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
  readonly status: number;
  /** Another server of the same document (e.g. one configured without a CA). */
  readonly baseUrl?: string;
  /** A stream that does not end (Server-Sent Events): read its first bytes, then close it. */
  readonly firstBytes?: boolean;
  /** Brings the server into the state the case needs (e.g. a caller's streams all held). */
  readonly before?: () => Promise<void>;
}

/** The first chunk of a body that does not end, as text; the connection is closed after it. */
async function firstChunk(body: Dispatcher.ResponseData['body']): Promise<string> {
  for await (const chunk of body) {
    body.destroy();
    return Buffer.from(chunk as Uint8Array).toString('utf8');
  }
  return '';
}

/** `METHOD path` of every operation of the document. */
export function operations(doc: OpenApiDocument): string[] {
  return Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`),
  );
}

/** Compares the served document with docs/api/<file> (or writes it there when asked). */
export function assertKeptDocument(served: OpenApiDocument, file: string): void {
  const path = join(ROOT, 'docs/api', file);
  const text = `${JSON.stringify(served, null, 2)}\n`;
  if (process.env.PORTCULLIS_WRITE_OPENAPI === '1') writeFileSync(path, text);
  assert.equal(served.openapi, '3.1.0');
  assert.deepEqual(
    served,
    JSON.parse(readFileSync(path, 'utf8')),
    `docs/api/${file} differs from what the server generates: run the test with PORTCULLIS_WRITE_OPENAPI=1 and review the diff`,
  );
}

/** Every operation documents a 2xx response, and every response but 304 has a schema per media type. */
export function assertEveryResponseHasASchema(doc: OpenApiDocument): void {
  const missing: string[] = [];
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(ops)) {
      const at = `${method.toUpperCase()} ${path}`;
      if (!Object.keys(op.responses).some((s) => /^2/.test(s))) missing.push(`${at}: no 2xx response`);
      for (const [status, r] of Object.entries(op.responses)) {
        if (status === '304') continue;
        const media = Object.entries(r.content ?? {});
        if (media.length === 0 || media.some(([, m]) => !m.schema))
          missing.push(`${at} ${status}: no schema (a route without config.doc?)`);
      }
    }
  assert.deepEqual(missing, []);
}

/**
 * Runs every case against `baseUrl` and checks each answer against the document. The table must
 * name exactly the document's operations, and exercise every status it documents but 5XX.
 */
export async function assertResponsesMatch(
  doc: OpenApiDocument,
  baseUrl: string,
  table: Readonly<Record<string, readonly ApiCase[]>>,
): Promise<number> {
  assert.deepEqual(
    Object.keys(table).sort(),
    operations(doc).sort(),
    'the table of requests must cover exactly the operations the server has',
  );
  const ajv = new Ajv2020({
    strict: false,
    allErrors: true,
    formats: {
      'date-time': (s: string) => /^\d{4}-\d\d-\d\dT/.test(s) && !Number.isNaN(Date.parse(s)),
      // OpenAPI's name for base64 (swagger writes contentEncoding: base64 so).
      byte: (s: string) => /^[A-Za-z0-9+/]*={0,2}$/.test(s) && s.length % 4 === 0,
    },
  });
  const problems: string[] = [];
  let checked = 0;
  for (const [op, cases] of Object.entries(table)) {
    const [method, path] = op.split(' ') as [string, string];
    const responses = doc.paths[path]![method.toLowerCase()]!.responses;
    const exercised = new Set<string>();
    for (const c of cases) {
      await c.before?.();
      const res = await request(`${c.baseUrl ?? baseUrl}${c.path ?? path}`, {
        method: method as Dispatcher.HttpMethod,
        dispatcher: c.dispatcher,
        headers: c.headers ?? {},
        ...(c.body !== undefined ? { body: c.body } : {}),
      });
      const text = c.firstBytes && res.statusCode < 300 ? await firstChunk(res.body) : await res.body.text();
      checked++;
      const at = `${op} (${c.name})`;
      if (res.statusCode !== c.status) {
        problems.push(`${at}: status ${res.statusCode}, expected ${c.status}: ${text.slice(0, 200)}`);
        continue;
      }
      const key = [String(res.statusCode), `${String(res.statusCode)[0]}XX`, 'default'].find(
        (k) => responses[k],
      );
      if (!key) {
        problems.push(`${at}: status ${res.statusCode} is not documented`);
        continue;
      }
      exercised.add(key);
      const documented = responses[key]!;
      if (!documented.content) {
        if (text !== '') problems.push(`${at}: a body where the document has none`);
        continue;
      }
      const type = String(res.headers['content-type'] ?? '')
        .split(';')[0]!
        .trim();
      const media = documented.content[type];
      if (!media?.schema) {
        problems.push(`${at}: media type "${type}" is not documented for ${key}`);
        continue;
      }
      let body: unknown = text;
      if (type.endsWith('json')) {
        try {
          body = JSON.parse(text);
        } catch {
          problems.push(`${at}: ${type} body is not JSON`);
          continue;
        }
      }
      const validate = ajv.compile(media.schema);
      if (!validate(body))
        problems.push(`${at}: body does not match the schema of ${key}: ${ajv.errorsText(validate.errors)}`);
    }
    for (const status of Object.keys(responses))
      if (!status.startsWith('5') && !exercised.has(status))
        problems.push(`${op}: documented status ${status} is never exercised`);
  }
  assert.deepEqual(problems, []);
  return checked;
}

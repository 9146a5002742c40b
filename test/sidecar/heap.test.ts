import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

// What the flag does to V8's collections is measured in the benches (decision 0102): GC timing in a
// short child process varies too much with its surroundings to assert on. These tests pin down
// when the sidecar sets it and that an operator's own value wins.

/** Runs `script` as an ES module in a child under the sidecar's recommended heap cap; its last stdout line, parsed. */
function child(script: string, flags: string[] = []): Record<string, unknown> {
  const r = spawnSync(
    process.execPath,
    ['--max-semi-space-size=8', '--max-old-space-size=80', ...flags, '--input-type=module', '-e', script],
    // The scripts import the sidecar's modules by paths relative to the repository.
    { encoding: 'utf8', timeout: 60_000, cwd: new URL('../../', import.meta.url).pathname },
  );
  assert.equal(r.status, 0, r.stderr);
  // V8 reports an unknown or malformed flag on stderr without throwing.
  assert.equal(r.stderr, '');
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

// The sidecar's two kinds of HTTP/2 session: one it accepts (createH2Side: the inbound and
// outbound listeners) and one it opens (openH2c to an h2c app; openH2OverSocket to a peer sidecar
// goes through the same settleSession).
const report = `
import { heapGrowingPercentSet, tuneSidecarHeap } from './sidecar/heap.ts';
tuneSidecarHeap();
const before = heapGrowingPercentSet() ?? null;
`;
const print = `console.log(JSON.stringify({ before, after: heapGrowingPercentSet() ?? null }));`;
const ACCEPTED = `${report}
import { connect } from 'node:http2';
import { createServer } from 'node:net';
import { createH2Side } from './sidecar/inbound/h2.ts';
import { DEFAULT_CONNECTION_BUDGETS } from './core/index.ts';
const side = createH2Side({ streams: (req, res) => res.writeHead(204).end() }, DEFAULT_CONNECTION_BUDGETS);
const listener = createServer((socket) => side.accept(socket)).listen(0, '127.0.0.1');
await new Promise((r) => listener.once('listening', r));
const session = connect('http://127.0.0.1:' + listener.address().port);
await new Promise((r, j) => session.once('remoteSettings', r).once('error', j));
session.destroy();
listener.close();
side.server.close();
${print}`;
const OPENED = `${report}
import { createServer } from 'node:http2';
import { openH2c } from './sidecar/h2/relay.ts';
const app = createServer().listen(0, '127.0.0.1');
await new Promise((r) => app.once('listening', r));
const session = await openH2c('http://127.0.0.1:' + app.address().port, 5000);
session.destroy();
app.close();
${print}`;

// An attempt that never connects (the app is down) opens no session.
const REFUSED = `${report}
import { createServer } from 'node:net';
import { openH2c } from './sidecar/h2/relay.ts';
const closed = createServer().listen(0, '127.0.0.1');
await new Promise((r) => closed.once('listening', r));
const port = closed.address().port;
await new Promise((r) => closed.close(r));
await openH2c('http://127.0.0.1:' + port, 5000).then(
  () => { throw new Error('connected to a closed port'); },
  () => {},
);
${print}`;

test('the factor is set at the first HTTP/2 session, accepted or opened, not at start-up tuning (decision 0102)', () => {
  assert.deepEqual(child(ACCEPTED), { before: null, after: 200 });
  assert.deepEqual(child(OPENED), { before: null, after: 200 });
  assert.deepEqual(child(REFUSED), { before: null, after: null });
});

test("an operator's own --heap-growing-percent on Node's command line is kept", () => {
  for (const flag of [
    '--heap-growing-percent=30',
    '--heap_growing_percent=30',
    '-heap-growing-percent=30',
    '--heap-growing-percent=0',
  ])
    assert.deepEqual(child(OPENED, [flag]), { before: null, after: null }, flag);
});

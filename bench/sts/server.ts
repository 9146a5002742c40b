// Child process of the benchmark: runs either the STS or a bare fastify mTLS route returning a
// constant, with the same certificates and TLS settings. Prints `READY <port>` when listening.
import { readFileSync } from 'node:fs';
import Fastify from 'fastify';
import { createLogger } from '../../core/index.ts';
import type { AuditEvent, AuditSink } from '../../core/index.ts';
import { parseStsConfig, startSts } from '../../sts/index.ts';

const [mode, configJson] = process.argv.slice(2);
const config = parseStsConfig(JSON.parse(configJson!), 'bench config');

/** A sink that only counts: the benchmark measures the STS, not an audit transport. */
class CountingSink implements AuditSink {
  count = 0;
  last: AuditEvent | undefined;
  emit(event: AuditEvent): void {
    this.count++;
    this.last = event;
  }
  async record(event: AuditEvent) {
    this.emit(event);
  }
  accepting() {
    return true;
  }
  async flush() {}
  async close() {}
}

if (mode === 'sts-audit') {
  // The real audit client of the config's `audit:` section (a collector, failMode open or closed).
  const sts = await startSts(config, { logger: createLogger({ name: 'bench-sts', level: 'warn' }) });
  console.log(`READY ${sts.port}`);
  // Close (flushing the audit client's spool to the collector) before exiting.
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => void sts.close().then(() => process.exit(0)));
} else if (mode === 'sts') {
  const sts = await startSts(config, {
    audit: new CountingSink(),
    logger: createLogger({ name: 'bench-sts', level: 'warn' }),
  });
  console.log(`READY ${sts.port}`);
} else {
  const app = Fastify({
    https: {
      cert: readFileSync(config.tls.cert),
      key: readFileSync(config.tls.key),
      ca: readFileSync(config.tls.trustBundle),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: config.tls.minVersion,
    },
  });
  app.post('/oauth2/token', (_req, reply) => reply.type('application/json').send('{"ok":true}'));
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_r, b, d) =>
    d(null, b),
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  console.log(`READY ${typeof address === 'object' && address ? address.port : 0}`);
}

// Exit normally on a signal so that diagnostics such as --cpu-prof are written.
if (mode !== 'sts-audit')
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(0));

// Child process of the issuance benchmark: an STS with online issuance (EST) over the bench PKI.
// Every issued certificate's audit event is checked against the event schema, as the collector
// client does, and counted. Prints `READY <port>` when listening.
import { createLogger, parseAuditEvent } from '../../core/index.ts';
import type { AuditEvent, AuditSink } from '../../core/index.ts';
import { parseStsConfig, startSts } from '../../sts/index.ts';

const config = parseStsConfig(JSON.parse(process.argv[2]!), 'bench config');

class CheckingSink implements AuditSink {
  issued = 0;
  emit(event: AuditEvent): void {
    parseAuditEvent(event);
    if (event.type === 'cert.issued') this.issued++;
  }
  async record(event: AuditEvent): Promise<void> {
    this.emit(event);
  }
  accepting() {
    return true;
  }
  async flush() {}
  async close() {}
}

const sink = new CheckingSink();
const sts = await startSts(config, {
  audit: sink,
  masterKey: Buffer.alloc(32, 7),
  logger: createLogger({ name: 'bench-ca', level: 'warn' }),
});
console.log(`READY ${sts.port}`);
process.on('message', () => process.send!({ issued: sink.issued }));
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(0));

import type { AuditEvent, AuditSink, Logger } from '../core/index.ts';

/**
 * An {@link AuditSink} that writes each event as one JSON log line (`msg: "audit"`), for running
 * the STS before the audit collector is wired in. It never refuses events.
 */
export class LogAuditSink implements AuditSink {
  readonly #logger: Logger;
  constructor(logger: Logger) {
    this.#logger = logger;
  }
  emit(event: AuditEvent): void {
    this.#logger.info({ audit: event }, 'audit');
  }
  accepting(): boolean {
    return true;
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

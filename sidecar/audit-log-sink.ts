import type { AuditEvent, AuditSink, Logger } from '../core/index.ts';

/** An {@link AuditSink} that writes each event as one log line: the default until a collector is wired. */
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

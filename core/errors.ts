/** Stable error codes raised by core/. Callers match on `code`, never on the message. */
export type CoreErrorCode =
  | 'ERR_SPIFFE_ID_INVALID'
  | 'ERR_DURATION_INVALID'
  | 'ERR_CONFIG_NOT_FOUND'
  | 'ERR_CONFIG_INVALID'
  | 'ERR_REGISTRY_INVALID'
  | 'ERR_TOKEN_CLAIMS_INVALID'
  | 'ERR_AUDIT_EVENT_INVALID';

/**
 * Base of every Portcullis error: a stable machine-readable `code` plus a human message.
 * Packages subclass it with their own code unions; `cause` is passed through untouched.
 */
export class PortcullisError<C extends string = string> extends Error {
  readonly code: C;
  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Marks every PortcullisError, whichever copy of this module made it (see {@link isPortcullisError}). */
const PORTCULLIS_ERROR = Symbol.for('portcullis.error');
Object.defineProperty(PortcullisError.prototype, PORTCULLIS_ERROR, { value: true });

/**
 * `err instanceof PortcullisError`, also for an error made by another copy of core/: the build
 * (`npm run build`) bundles each command group with a copy of its own, and the CLI's entry catches
 * what a group throws.
 */
export function isPortcullisError(err: unknown): err is PortcullisError {
  return (
    err instanceof PortcullisError ||
    (err instanceof Error && (err as unknown as Record<symbol, unknown>)[PORTCULLIS_ERROR] === true)
  );
}

/** A string that should have been a SPIFFE ID is not one; `reason` says which rule of the spec it breaks. */
export class SpiffeIdError extends PortcullisError<'ERR_SPIFFE_ID_INVALID'> {
  readonly reason: string;
  constructor(reason: string) {
    super('ERR_SPIFFE_ID_INVALID', `invalid SPIFFE ID: ${reason}`);
    this.reason = reason;
  }
}

/** A duration string such as `5m` or `24h` could not be parsed. */
export class DurationError extends PortcullisError<'ERR_DURATION_INVALID'> {
  constructor(message: string) {
    super('ERR_DURATION_INVALID', message);
  }
}

/**
 * A configuration or data file is missing or wrong. The message is one line:
 * `<file>: <key path>: <problem>`, ready to print as is.
 */
export class ConfigError extends PortcullisError<
  'ERR_CONFIG_NOT_FOUND' | 'ERR_CONFIG_INVALID' | 'ERR_REGISTRY_INVALID'
> {
  readonly file: string;
  readonly keyPath: string;
  readonly problem: string;
  constructor(
    code: 'ERR_CONFIG_NOT_FOUND' | 'ERR_CONFIG_INVALID' | 'ERR_REGISTRY_INVALID',
    file: string,
    keyPath: string,
    problem: string,
    options?: { cause?: unknown },
  ) {
    super(code, keyPath ? `${file}: ${keyPath}: ${problem}` : `${file}: ${problem}`, options);
    this.file = file;
    this.keyPath = keyPath;
    this.problem = problem;
  }
}

/** Token claims received from the wire do not have the shape of a Portcullis access token. */
export class TokenClaimsError extends PortcullisError<'ERR_TOKEN_CLAIMS_INVALID'> {
  constructor(message: string) {
    super('ERR_TOKEN_CLAIMS_INVALID', message);
  }
}

/** An audit event does not match the schema of core/audit-event.ts. */
export class AuditEventError extends PortcullisError<'ERR_AUDIT_EVENT_INVALID'> {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AUDIT_EVENT_INVALID', message, options);
  }
}

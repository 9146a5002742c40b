// Public face of core/: shared contracts and plumbing. Nothing here imports another part of Portcullis.
export {
  PortcullisError,
  isPortcullisError,
  SpiffeIdError,
  DurationError,
  ConfigError,
  TokenClaimsError,
  AuditEventError,
} from './errors.ts';
export type { CoreErrorCode } from './errors.ts';
export {
  parseSpiffeId,
  parseTrustDomain,
  formatSpiffeId,
  isMemberOf,
  SPIFFE_ID_MAX_BYTES,
} from './spiffe-id.ts';
export type { SpiffeId } from './spiffe-id.ts';
export { parseDuration, formatDuration } from './duration.ts';
export { withoutCredentials } from './url-credentials.ts';
export {
  parseConfigText,
  formatKeyPath,
  strictObject,
  spiffeIdSchema,
  trustDomainSchema,
  durationSchema,
  timerDurationSchema,
  MAX_TIMER_MS,
  tlsFilesSchema,
  pathSchema,
  portSchema,
  resolveConfigPath,
  resolveTlsFiles,
} from './config.ts';
export { loadConfigFile, readConfiguredFile } from './config-file.ts';
export { describeClientError, endWithHttpError } from './raw-http.ts';
export { coalesceWrites } from './coalesce-writes.ts';
export { collectProcessMetrics } from './process-metrics.ts';
export { LIVENESS_BODY, readinessReport, serveHealth } from './health.ts';
export { opsListenerSchema, startOpsListener } from './ops-listener.ts';
export type { OpsListener, OpsState } from './ops-listener.ts';
export { accessLogSchema, createAccessLog } from './access-log.ts';
export type { AccessLine, AccessLogConfig } from './access-log.ts';
export type { ReadinessCheck, ReadinessReport } from './health.ts';
export {
  connectionBudgetsSchema,
  DEFAULT_CONNECTION_BUDGETS,
  type ConnectionBudgets,
} from './connection-budgets.ts';
export {
  applyConnectionBudgets,
  connectionServerOptions,
  isBodyTimedOut,
  type BudgetClosure,
  type ConnectionBudgetHooks,
  type ConnectionGuard,
} from './apply-connection-budgets.ts';
export { registerConnectionMetrics } from './connection-metrics.ts';
export { parseRegistry, ROLES, TOKEN_TTL_CAP_MS, DEFAULT_TOKEN_TTL_MS } from './registry.ts';
export type { Registry, Workload, Role, RegistrySource } from './registry.ts';
export { loadRegistry } from './registry-load.ts';
export {
  ACCESS_TOKEN_TYP,
  ACCESS_TOKEN_TYPE_URI,
  TOKEN_EXCHANGE_GRANT,
  CNF_THUMBPRINT,
  TOKEN_ALGORITHMS,
  buildAccessTokenClaims,
  certificateThumbprint,
  parseAccessTokenClaims,
} from './token-claims.ts';
export type { AccessTokenClaims, BuildClaimsInput, TokenAlgorithm } from './token-claims.ts';
export {
  AUDIT_EVENT_TYPES,
  auditEventSchema,
  parseAuditEvent,
  MemoryAuditSink,
  LogAuditSink,
} from './audit-event.ts';
export type { AuditEvent, AuditEventType, AuditSink } from './audit-event.ts';
export { createLogger, logLevelFromEnv, LOG_LEVELS, REDACTED_PATHS } from './logger.ts';
export type { Logger, LoggerOptions } from './logger.ts';
export {
  startTelemetry,
  activeTracer,
  parseTraceparent,
  formatTraceparent,
  startSpan,
  SpanKind,
  SpanStatusCode,
  type Telemetry,
  type TelemetryOptions,
  type Span,
  type SpanContext,
  type Tracer,
} from './telemetry.ts';
export { identityConfigSchema, resolveIdentityConfig } from './identity-config.ts';
export type { IdentityConfig } from './identity-config.ts';
export { DEFAULT_SVID_TTL_MS, SVID_TTL_CAP_MS } from './registry.ts';
export {
  API_VERSION,
  LIVENESS_SCHEMA,
  OPENAPI_ROUTE_DOC,
  READINESS_SCHEMA,
  fromZod,
  jsonResponse,
  openApiOptions,
  textResponse,
} from './openapi.ts';
export type { JsonSchema, ResponseDoc, RouteDoc } from './openapi.ts';

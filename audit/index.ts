// Public face of audit/: the tamper-evident audit log. Records, Merkle proofs and checkpoints are
// pure; stores, the collector and the client do the I/O.
export {
  AuditError,
  AuditSpoolError,
  RecordInvalidError,
  ChainBrokenError,
  ProofInvalidError,
  ProofRangeError,
  CheckpointError,
  StoreError,
  CollectorRequestError,
  CollectorClientError,
} from './errors.ts';
export type { AuditErrorCode } from './errors.ts';
export { canonicalJson } from './canonical.ts';
export { GENESIS_PREV, buildRecord, hashRecord, parseRecordLine, toRecord } from './record.ts';
export type { AuditRecord, EncodedRecord } from './record.ts';
export { EMPTY_ROOT, leafHash, nodeHash, recordLeafHash, MerkleTree, MerkleFrontier } from './merkle.ts';
export { verifyInclusion } from './proof-inclusion-verify.ts';
export type { InclusionInput } from './proof-inclusion-verify.ts';
export { verifyConsistency } from './proof-consistency-verify.ts';
export type { ConsistencyInput } from './proof-consistency-verify.ts';
export {
  CHAIN_HEAD_EXTENSION,
  formatCheckpointBody,
  formatVerifierKey,
  noteKeyId,
  openSignedNote,
  parseCheckpointBody,
  parseVerifierKey,
  signCheckpoint,
  verifyCheckpoint,
} from './checkpoint.ts';
export type { CheckpointBody, CheckpointSigner, VerifierKey } from './checkpoint.ts';
export { ChainVerifier, verifyChain } from './chain-verify.ts';
export type { ChainVerdict, ChainVerifierOptions } from './chain-verify.ts';
export { FILTER_FIELDS, INTERVALS, matchesFilter } from './query-filter.ts';
export { encodeCursor, nextCursor, pageFilter, readCursor } from './query-cursor.ts';
export type {
  AggregateGroup,
  AggregateInterval,
  AggregateQuery,
  FilterField,
  RecordFilter,
} from './query-filter.ts';
export type {
  AppendOutcome,
  AuditStore,
  IdempotencyClaim,
  IdempotencyEntry,
  IdempotencyOptions,
  LogHead,
  StoreDeps,
  UncoveredTail,
} from './store/store.ts';
export { SEAL_LINE, createSealer, formatSealText, parseSealText, signSeal, verifySeal } from './seal.ts';
export type { SealBody, Sealer } from './seal.ts';
export { MemoryStore, createMemoryStore } from './store/memory.ts';
export { FileStore, openFileStore } from './store/file.ts';
export type { FileStoreOptions } from './store/file.ts';
export { PostgresStore, openPostgresStore } from './store/postgres.ts';
export type { PostgresStoreOptions } from './store/postgres.ts';
export { openStore } from './store/open.ts';
export type { OpenStoreOptions } from './store/open.ts';
export { verifyStore } from './store-verify.ts';
export { auditConfigSchema, loadAuditConfig, parseAuditConfig } from './collector/config.ts';
export type { AuditConfig, AuditConfigInput } from './collector/config.ts';
export { DATA_FILES, loadCheckpointKey } from './collector/key-load.ts';
export { AuditLog } from './collector/log.ts';
export type { AuditLogDeps } from './collector/log.ts';
export { buildCollectorApp } from './collector/app.ts';
export type { CollectorDeps, CollectorPeerVerifier } from './collector/app.ts';
export { startCollector } from './collector/start.ts';
export type { CollectorOverrides, RunningCollector } from './collector/start.ts';
export { DELIVERY_FAILING, createAuditClient } from './client/client.ts';
export {
  DEFAULT_REPORT_INTERVAL_MS,
  SPOOL_REPORT_HEADER,
  SPOOL_STATES,
  SpoolReportError,
  checkSpoolReport,
  formatSpoolReport,
  parseSpoolReport,
} from './spool-report.ts';
export type { SpoolReport, SpoolState } from './spool-report.ts';
export { SourceRegistry, STALE_AFTER_INTERVALS } from './collector/sources.ts';
export type { SourceView } from './collector/sources.ts';
export type { AuditClient, AuditClientMetrics, AuditClientOptions } from './client/client.ts';
export { Spool } from './client/spool.ts';
export { PendingLines } from './client/pending.ts';
export type { PendingWaiter, TakenLines } from './client/pending.ts';
export { createCollectorApi } from './client/api.ts';
export type {
  CollectorApi,
  CollectorApiOptions,
  CollectorSources,
  CollectorStatus,
  EventsPage,
  InclusionBundle,
} from './client/api.ts';
export { createCollectorReadClient } from './client/read-client.ts';
export type { CollectorReadClient, CollectorResponse } from './client/read-client.ts';
export { fetchCheckpoint } from './checkpoint-fetch.ts';
export { fetchInclusionBundle, verifyInclusionBundle } from './inclusion-bundle-verify.ts';
export { verifyLog } from './verify-log.ts';
export type { LogVerification } from './verify-log.ts';
export { formatRecordTable } from './query-format.ts';
export { auditSinkConfigSchema, createAuditSink, resolveAuditSinkConfig } from './client/sink-config.ts';
export type { AuditSinkConfig } from './client/sink-config.ts';

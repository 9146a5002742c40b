// Public face of sts/: the Security Token Service (docs/sts.md).
export { StsError, HTTP_ERRORS } from './errors.ts';
export type { StsErrorCode, OAuthErrorCode } from './errors.ts';
export { loadStsConfig, parseStsConfig, stsConfigSchema } from './config.ts';
export type { StsConfig, StsConfigInput } from './config.ts';
export { parseMasterKey, MASTER_KEY_ENV, MASTER_KEY_MIN_BYTES } from './master-key.ts';
export { buildStsApp } from './http/app.ts';
export type { StsDeps } from './http/app.ts';
export type { StsPeer, StsPeerVerifier } from './http/peer.ts';
export { startSts } from './start.ts';
export type { RunningSts, StartStsOverrides } from './start.ts';
export { Keyring } from './keyring/keyring.ts';
export type { KeyringOptions, KeySummary, Signer } from './keyring/keyring.ts';
export { advanceKeyring, requestRotation } from './keyring/advance.ts';
export type { KeyringChange, KeyringStep } from './keyring/advance.ts';
export type { KeyRecord, KeyState, KeyringPolicy, KeyringState } from './keyring/state.ts';
export { generateSigningKey, jwkThumbprint } from './keyring/key-material.ts';
export type { KeyMaterial } from './keyring/key-material.ts';
export type { Keystore, KeystoreSnapshot } from './keystore/keystore.ts';
export { MemoryKeystore } from './keystore/memory.ts';
export { FileKeystore } from './keystore/file.ts';
export type { FileKeystoreOptions } from './keystore/file.ts';
export { VaultKeystore } from './keystore/vault.ts';
export type { VaultKeystoreOptions } from './keystore/vault.ts';
export { createKeystore } from './keystore/create.ts';
export type { KeystoreSecrets } from './keystore/create.ts';
export { createStsMetrics } from './metrics.ts';
export type { StsMetrics } from './metrics.ts';
export { createRateLimiter } from './rate-limit.ts';
export type { RateLimiter, RateLimiterOptions } from './rate-limit.ts';
export { createDenyList } from './revocations/deny-list.ts';
export type { DenyList, DenyEntry, RevocationsDocument } from './revocations/deny-list.ts';
export { parseTokenRequest } from './token/parse-request.ts';
export type { TokenRequest } from './token/parse-request.ts';
export { issueAccessToken } from './token/issue.ts';
export type { IssueInput, IssuedToken } from './token/issue.ts';
export { createStsAdminClient } from './client/admin.ts';
export type { StsAdminClient, StsAdminClientOptions } from './client/admin.ts';
export type {
  JoinTokenRecord,
  RedeemResult,
  RevocationEntry,
  StoredJoinToken,
  StsStateStore,
} from './state/store.ts';
export { MemoryStateStore } from './state/memory.ts';
export { FileStateStore } from './state/file.ts';
export { PostgresStateStore } from './state/postgres.ts';
export type { PostgresStateStoreOptions } from './state/postgres.ts';
export { openStateStore } from './state/create.ts';
export { followRevocations } from './state/follow.ts';
export { JOIN_TOKEN, joinTokenId } from './http/routes/est.ts';
export type { EstCa } from './http/routes/est.ts';

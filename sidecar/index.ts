// Public face of sidecar/: inbound (mTLS, token, binding, path, authz, forward, audit), outbound
// (route, token source, mTLS dispatcher), JWKS cache, policy loading and enforcement.
export { SidecarError, SIDECAR_STATUS, statusForCode } from './errors.ts';
export type { SidecarErrorCode } from './errors.ts';
export { loadSidecarConfig, parseSidecarConfig, sidecarConfigSchema } from './config.ts';
export type { SidecarConfig, SidecarConfigInput } from './config.ts';
export { startSidecar } from './start.ts';
export { sidecarServiceName } from './service-name.ts';
export type { RunningSidecar, StartSidecarOverrides } from './start.ts';
export { parsePolicy } from './policy/parse.ts';
export type { Policy, PolicyRule, PolicyMode } from './policy/parse.ts';
export { loadPolicyFile } from './policy/load.ts';
export { compilePolicy, DEFAULT_DENY_RULE } from './policy/compile.ts';
export type { Authorizer, Decision } from './policy/compile.ts';
export { CASBIN_MODEL, translatePolicy } from './policy/translate.ts';
export type { CasbinRows } from './policy/translate.ts';
export { checkRequestTarget } from './inbound/target.ts';
export type { CheckedTarget } from './inbound/target.ts';
export { scanRequestHeaders } from './inbound/headers.ts';
export { verifyAccessToken } from './token/verify.ts';
export type { TokenRules, VerifiedToken } from './token/verify.ts';
export { createJwksCache } from './jwks/cache.ts';
export type { JwksCache, JwksCacheDeps } from './jwks/cache.ts';
export { parseJwks } from './jwks/parse.ts';
export { createExplainer, formatExplanation } from './policy/explain.ts';
export type { Explainer, Explanation, LosingRule } from './policy/explain.ts';
export { resolveCaller } from './policy/caller.ts';
export { loadPolicyTestFile, defaultPolicyFileFor } from './policy/test-file.ts';
export type { PolicyTestCase, PolicyTestFile, ExpectedOutcome } from './policy/test-file.ts';
export { runPolicyTests, formatPolicyTestReport } from './policy/test-run.ts';
export type { PolicyTestReport, PolicyTestResult, ActualOutcome } from './policy/test-run.ts';
export { lintPolicy, formatLintFindings } from './policy/lint.ts';
export type { LintFinding, LintCode } from './policy/lint.ts';
export { replayDecisions, formatReplayReport, resolveSince } from './policy/replay.ts';
export type {
  ReplayReport,
  ReplayGroup,
  ReplayExample,
  ReplayChange,
  ReplayOptions,
} from './policy/replay.ts';
export { openDecisionSource } from './policy/replay-source.ts';
export type { DecisionSource, DecisionSourceOptions } from './policy/replay-source.ts';
export { findPolicyFiles } from './policy/find-files.ts';

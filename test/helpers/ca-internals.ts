// The ca/ parts the test PKI needs, gathered in one place (tests may reach into package internals).
export * from '../../ca/index.ts';
export { signingAlgorithm } from '../../ca/keys.ts';

import { PortcullisError } from '../core/index.ts';

/** Stable error codes raised by ca/. */
export type CaErrorCode =
  | 'ERR_CA_PEER_NO_CERT'
  | 'ERR_CA_CERT_MALFORMED'
  | 'ERR_CA_CHAIN_UNTRUSTED'
  | 'ERR_CA_CHAIN_INVALID'
  | 'ERR_CA_CERT_EXPIRED'
  | 'ERR_CA_CERT_NOT_YET_VALID'
  | 'ERR_CA_CERT_REVOKED'
  | 'ERR_CA_LEAF_IS_CA'
  | 'ERR_CA_LEAF_KEY_USAGE'
  | 'ERR_CA_LEAF_EXTENDED_KEY_USAGE'
  | 'ERR_CA_SPIFFE_ID_MISSING'
  | 'ERR_CA_SPIFFE_ID_MULTIPLE'
  | 'ERR_CA_SPIFFE_ID_INVALID'
  | 'ERR_CA_FOREIGN_TRUST_DOMAIN'
  | 'ERR_CA_NAME_CONSTRAINTS'
  | 'ERR_CA_KEY_TOO_WEAK'
  | 'ERR_CA_KEY_UNSUPPORTED'
  | 'ERR_CA_NOT_FOUND'
  | 'ERR_CA_INVALID'
  | 'ERR_CA_EXISTS'
  | 'ERR_CA_CRL_INVALID'
  | 'ERR_CA_SERIAL_INVALID'
  | 'ERR_CA_CSR_INVALID'
  | 'ERR_CA_CSR_SIGNATURE'
  | 'ERR_CA_CSR_IDENTITY'
  | 'ERR_CA_ENROLMENT_FAILED'
  | 'ERR_CA_IDENTITY_MISSING';

/** Every failure of ca/: a peer certificate refused, a CA directory missing or broken, a bad serial. */
export class CaError extends PortcullisError<CaErrorCode> {}

import { CaError } from './errors.ts';

/**
 * Canonical form of a certificate serial: lowercase hex without separators or leading zeros
 * (`0A:1B` → `a1b`). Accepts the forms openssl and browsers print. Throws CaError
 * `ERR_CA_SERIAL_INVALID` for anything that is not a hex serial of at most 20 bytes (RFC 5280).
 */
export function normalizeSerial(serial: string): string {
  if (typeof serial !== 'string') throw new TypeError('"serial" must be a string');
  const hex = serial.trim().replace(/^0x/i, '').replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]+$/.test(hex) || hex.length > 40) {
    throw new CaError(
      'ERR_CA_SERIAL_INVALID',
      `"${serial.slice(0, 64)}" is not a certificate serial (hex, at most 20 bytes)`,
    );
  }
  return hex.replace(/^0+(?=.)/, '');
}

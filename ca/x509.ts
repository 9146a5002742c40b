// @peculiar/x509 resolves its ASN.1 types through tsyringe, which needs the Reflect metadata
// polyfill loaded first. Everything in ca/ takes x509 from here so the order always holds.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(globalThis.crypto);

export { x509 };

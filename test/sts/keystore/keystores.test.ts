// Runs the keystore conformance suite against the memory, file and vault keystores.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FileKeystore,
  MemoryKeystore,
  VaultKeystore,
  advanceKeyring,
  generateSigningKey,
} from '../../../sts/index.ts';
import { keystoreConformance } from './conformance.ts';
import { startFakeVault } from './fake-vault.ts';

keystoreConformance('memory', async () => {
  const store = new MemoryKeystore();
  return { store, twin: () => store, cleanup: async () => {} };
});

keystoreConformance('file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sts-file-ks-'));
  const masterKey = randomBytes(32);
  const make = () => new FileKeystore({ dir: join(dir, 'keys'), masterKey });
  return { store: make(), twin: make, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

keystoreConformance('vault', async () => {
  const vault = await startFakeVault();
  const path = 'portcullis/sts/keyring';
  const make = () => new VaultKeystore({ address: vault.address, mount: 'secret', path, token: vault.token });
  return { store: make(), twin: make, cleanup: () => vault.close() };
});

test('the vault keystore reports a refused token as ERR_STS_KEYSTORE_UNAVAILABLE', async () => {
  const vault = await startFakeVault();
  try {
    const ks = new VaultKeystore({ address: vault.address, mount: 'secret', path: 'p', token: 'wrong' });
    await assert.rejects(ks.read(), { code: 'ERR_STS_KEYSTORE_UNAVAILABLE', message: /HTTP 403/ });
  } finally {
    await vault.close();
  }
});

test('the vault keystore sends its writes with cas so the server sees and refuses conflicts', async () => {
  const vault = await startFakeVault();
  try {
    const ks = new VaultKeystore({ address: vault.address, mount: 'secret', path: 'p', token: vault.token });
    const state = advanceKeyring(
      undefined,
      0,
      { rotationPeriodMs: 10, publishLeadMs: 1, retainAfterRetireMs: 1 },
      generateSigningKey,
    ).state;
    await ks.write(state, 0);
    await assert.rejects(ks.write(state, 0), { code: 'ERR_STS_KEYSTORE_CONFLICT' });
    assert.equal(vault.casConflicts, 1);
  } finally {
    await vault.close();
  }
});

test('the vault keystore learns the version from metadata when the latest version was deleted', async () => {
  const vault = await startFakeVault();
  try {
    const ks = new VaultKeystore({ address: vault.address, mount: 'secret', path: 'p', token: vault.token });
    const state = advanceKeyring(
      undefined,
      0,
      { rotationPeriodMs: 10, publishLeadMs: 1, retainAfterRetireMs: 1 },
      generateSigningKey,
    ).state;
    await ks.write(state, 0);
    await fetch(`${vault.address}/v1/secret/data/p`, {
      method: 'DELETE',
      headers: { 'x-vault-token': vault.token },
    });
    const snap = await ks.read();
    assert.deepEqual(snap, { state: undefined, version: 1 });
    assert.equal(await ks.write(state, snap.version), 2);
  } finally {
    await vault.close();
  }
});

test('the vault keystore refuses a stored keyring of the wrong shape with ERR_STS_KEYSTORE_CORRUPT', async () => {
  const vault = await startFakeVault();
  try {
    await fetch(`${vault.address}/v1/secret/data/p`, {
      method: 'POST',
      headers: { 'x-vault-token': vault.token, 'content-type': 'application/json' },
      body: JSON.stringify({ data: { format: 'something-else' } }),
    });
    const ks = new VaultKeystore({ address: vault.address, mount: 'secret', path: 'p', token: vault.token });
    await assert.rejects(ks.read(), { code: 'ERR_STS_KEYSTORE_CORRUPT' });
  } finally {
    await vault.close();
  }
});

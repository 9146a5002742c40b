import type { AuditStore, MemoryStore } from '../../audit/index.ts';
import { createMemoryStore } from '../../audit/index.ts';
import { storeConformance } from './store-conformance.ts';

storeConformance('memory store', () => ({
  async open(clock, deps) {
    return createMemoryStore({ ...deps, clock });
  },
  // A memory log lives as long as its object: "reopening" keeps the same lines.
  async reopen(store: AuditStore) {
    return store;
  },
  async lines(store) {
    return [...(store as MemoryStore).lines];
  },
  async replace(store, lines) {
    const m = store as MemoryStore;
    m.lines.splice(0, m.lines.length, ...lines);
    return m;
  },
  async cleanup() {},
}));

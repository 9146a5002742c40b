// Preload that samples every allocation of the process it is loaded into, collected or not, and
// writes the profile when the process exits: where the bytes a request allocates come from
// (decision 0104). V8's own `--heap-prof` keeps only what is still alive at exit.
//
//   BENCH_ALLOC_PROFILE_DIR=/tmp/alloc \
//   BENCH_SIDECAR_NODE_ARGS="--import=./bench/sidecar/alloc-profile.ts" \
//   BENCH_BARE_NODE_ARGS="--import=./bench/sidecar/alloc-profile.ts" \
//   node bench/sidecar/run.ts --runs 1 --from built --only bare,sidecar
//
// Each process writes `<dir>/alloc-<pid>.heapprofile` (Chrome DevTools' format). Divide a
// function's self size by the requests the process served for bytes per request.
import { Session } from 'node:inspector';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.env.BENCH_ALLOC_PROFILE_DIR;
if (!dir) throw new Error('alloc-profile: set BENCH_ALLOC_PROFILE_DIR to the directory for the profiles');
mkdirSync(dir, { recursive: true });
const session = new Session();
session.connect();
// One sample per 16 KB allocated on average; objects the scavenger or the mark-compactor
// collected stay in the profile.
session.post('HeapProfiler.startSampling', {
  samplingInterval: 16_384,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
});
process.on('exit', () => {
  // A session in the same thread answers synchronously: the file is written before the exit.
  session.post('HeapProfiler.stopSampling', (err, result) => {
    if (err) console.error(`alloc-profile: ${err.message}`);
    else writeFileSync(join(dir, `alloc-${process.pid}.heapprofile`), JSON.stringify(result.profile));
  });
});

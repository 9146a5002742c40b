// Preloaded into a measured sidecar (`node --import ./bench/sidecar/report-memory.mjs …`): on
// SIGUSR2 writes one JSON line to stderr with process.memoryUsage(), V8's heap spaces (used MB). Plain JavaScript, so that it adds no type stripping to the process measured.
import process from 'node:process';
import { getHeapSpaceStatistics } from 'node:v8';

process.on('SIGUSR2', () => {
  const mb = (n) => Math.round(n / 1e5) / 10;
  const m = process.memoryUsage();
  const spaces = Object.fromEntries(
    getHeapSpaceStatistics().map((s) => [s.space_name, mb(s.space_used_size)]),
  );
  process.stderr.write(
    `MEMORY ${JSON.stringify({
      rss: mb(m.rss),
      heapTotal: mb(m.heapTotal),
      heapUsed: mb(m.heapUsed),
      external: mb(m.external),
      arrayBuffers: mb(m.arrayBuffers),
      spaces,
    })}\n`,
  );
});

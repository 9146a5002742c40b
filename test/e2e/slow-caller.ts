// A child process of the fair-share test: opens N mTLS connections to a sidecar as one caller and
// sends on each a POST whose declared 1,000-byte body comes one byte every 300 ms. Prints
// `ready` once every request is sent; on stdin's end, closes everything and prints one JSON line:
// how many answers began with each status line, and the first 429 answer.
// usage: node slow-caller.ts PORT TOKEN_FILE CERT_FILE KEY_FILE CA_FILE COUNT
import { readFileSync } from 'node:fs';
import { connect } from 'node:tls';
import type { TLSSocket } from 'node:tls';

const [port, tokenFile, certFile, keyFile, caFile, count] = process.argv.slice(2);
const token = readFileSync(tokenFile!, 'utf8').trim();
const tls = {
  port: Number(port),
  host: '127.0.0.1',
  servername: 'localhost',
  cert: readFileSync(certFile!, 'utf8'),
  key: readFileSync(keyFile!, 'utf8'),
  ca: readFileSync(caFile!, 'utf8'),
};
const answers: string[] = [];
const sockets: TLSSocket[] = [];
const closed: Promise<void>[] = [];

function open(i: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(tls, () => {
      socket.write(
        `POST /orders HTTP/1.1\r\nhost: orders\r\nauthorization: Bearer ${token}\r\ncontent-length: 1000\r\n\r\n`,
      );
      const trickle = setInterval(() => socket.writable && socket.write('x'), 300);
      socket.once('close', () => clearInterval(trickle));
      resolve();
    });
    answers[i] = '';
    socket.on('data', (c: Buffer) => (answers[i] += c.toString('latin1')));
    socket.once('error', reject);
    closed.push(new Promise((r) => socket.once('close', () => r())));
    sockets.push(socket);
  });
}

await Promise.all(Array.from({ length: Number(count) }, (_, i) => open(i)));
process.stdout.write('ready\n');
process.stdin.resume();
process.stdin.on('end', async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(closed);
  const statuses: Record<string, number> = {};
  for (const a of answers) {
    const line = a.split('\r\n')[0] || '(none)';
    statuses[line] = (statuses[line] ?? 0) + 1;
  }
  process.stdout.write(
    `${JSON.stringify({ statuses, first429: answers.find((a) => a.startsWith('HTTP/1.1 429 ')) })}\n`,
  );
  process.exit(0);
});

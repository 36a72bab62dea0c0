// Decoder-only micro-benchmark (no Postgres): decodePgoutput on XLogData messages shaped like the
// capture-decode workload rows (bigint, int, md5 text, timestamptz, numeric), decoded in place
// from the CopyData chunk exactly as ReplicationStream does. Prints messages/s.
//
//   npx tsx bench/capture-decode-micro.ts [--messages 2000000]

import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { decodePgoutput, XLOGDATA_HEADER_SIZE } from '../src/pg/pgoutput.js';

const { values: args } = parseArgs({ options: { messages: { type: 'string', default: '2000000' } } });
const N = Number(args.messages);

function text(s: string): Buffer {
  const v = Buffer.from(s, 'utf8');
  const h = Buffer.alloc(5);
  h[0] = 0x74; // 't'
  h.writeUInt32BE(v.length, 1);
  return Buffer.concat([h, v]);
}

function insert(id: number): Buffer {
  const head = Buffer.alloc(XLOGDATA_HEADER_SIZE + 1 + 4 + 1 + 2);
  head[0] = 0x77; // 'w'
  let p = XLOGDATA_HEADER_SIZE;
  head[p++] = 0x49; // 'I'
  head.writeUInt32BE(16385, p);
  p += 4;
  head[p++] = 0x4e; // 'N'
  head.writeUInt16BE(5, p);
  return Buffer.concat([
    head,
    text(String(id)),
    text(String(id % 1000)),
    text(createHash('md5').update(String(id)).digest('hex')),
    text('2024-01-02 03:04:05+00'),
    text((id * 1.37).toFixed(2)),
  ]);
}

const samples = Array.from({ length: 1024 }, (_, i) => insert(i * 7919 + 1));
let sink = 0;
for (let round = 0; round < 3; round++) {
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const m = decodePgoutput(samples[i & 1023]!, XLOGDATA_HEADER_SIZE);
    if (m.tag === 'insert') sink += m.new.values.length;
  }
  const s = (performance.now() - t0) / 1000;
  process.stdout.write(`round ${round + 1}: ${Math.round(N / s).toLocaleString('en-US')} insert messages/s (${((s / N) * 1e9).toFixed(0)} ns each)\n`);
}
if (sink === 0) process.stdout.write('unreachable\n');

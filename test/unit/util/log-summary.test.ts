import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { logSummarizer } from '../../../src/util/log-summary.js';

// Issue 14: kafkajs's lines through our logger at debug, summarised at warn, no stack traces.

function capture(level: string) {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level }, sink), lines };
}

describe('log summarizer', () => {
  it('says the first of a kind at warn at once, then one summary per window with the count; every line at debug', () => {
    let t = 0;
    const { log, lines } = capture('debug');
    const s = logSummarizer(log, 'kafkajs', 60_000, () => t);
    for (let i = 0; i < 5; i++)
      s(true, 'Connection error: connect ECONNREFUSED 127.0.0.1:9092', { broker: '127.0.0.1:9092', error: 'connect ECONNREFUSED', retryCount: i });
    s(false, 'Request Metadata(key: 3)', { correlationId: 7 });
    const warns = () => lines.filter((l) => l.level === 40);
    expect(warns()).toHaveLength(1);
    expect(warns()[0]!.msg).toBe('kafkajs: Connection error: connect ECONNREFUSED 127.0.0.1:9092: connect ECONNREFUSED (log.level debug shows the details)');
    expect(lines.filter((l) => l.level === 20)).toHaveLength(6);
    t = 61_000;
    s.flush();
    expect(warns()).toHaveLength(2);
    expect(warns()[1]!.msg).toMatch(/4 times in the last 60 s; log.level debug shows each/);
    for (const w of warns()) expect(JSON.stringify(w)).not.toMatch(/\n\s+at |stack/);
  });

  it('at the default level (info) only the summaries reach the output', () => {
    const { log, lines } = capture('info');
    const s = logSummarizer(log, 'kafkajs', 60_000, () => 0);
    s(true, 'Crash: KafkaJSNumberOfRetriesExceeded', { error: 'x', stack: 'Error: x\n    at y' });
    s(false, 'debug chatter', {});
    expect(lines).toHaveLength(1);
    expect(lines[0]!.level).toBe(40);
  });
});

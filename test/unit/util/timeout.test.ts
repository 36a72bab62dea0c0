import { describe, expect, it } from 'vitest';
import { quoteIdent } from '../../../src/pg/quote.js';
import { withTimeout } from '../../../src/util/timeout.js';

describe('withTimeout', () => {
  it('passes the value of a promise that settles in time', async () => {
    await expect(withTimeout(Promise.resolve(42), 1000)).resolves.toBe(42);
  });

  it('passes the rejection of a promise that settles in time', async () => {
    await expect(withTimeout(Promise.reject(new Error('boom')), 1000)).rejects.toThrow('boom');
  });

  it('rejects with the default error, or the one given, when the promise is late', async () => {
    const never = new Promise<never>(() => undefined);
    await expect(withTimeout(never, 5)).rejects.toThrow('timed out after 5 ms');
    await expect(withTimeout(never, 5, () => new Error('Kafka did not answer'))).rejects.toThrow('Kafka did not answer');
  });
});

describe('quoteIdent', () => {
  it('always double-quotes and doubles embedded quotes', () => {
    expect(quoteIdent('t')).toBe('"t"');
    expect(quoteIdent('select')).toBe('"select"');
    expect(quoteIdent('a"b')).toBe('"a""b"');
  });
});

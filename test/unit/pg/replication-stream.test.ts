import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import { pluginOptions, replicationError, replicationOptions, REPLICATION_SESSION_OPTIONS } from '../../../src/pg/replication-stream.js';

// The I/O of ReplicationStream is covered by test/integration/pg; these are its pure helpers.

function dbError(code: string, message = 'boom'): pg.DatabaseError {
  const e = new pg.DatabaseError(message, 0, 'error');
  e.code = code;
  e.severity = 'ERROR';
  return e;
}

describe('pluginOptions', () => {
  it('asks for protocol 1, messages, and a double-quoted publication list', () => {
    expect(pluginOptions('cdp', 150004)).toEqual({ proto_version: '1', publication_names: '"cdp"', messages: 'true' });
    expect(pluginOptions('My "Pub", two', 160000).publication_names).toBe('"My ""Pub"", two"');
  });

  it('refuses servers without the messages option (before 14)', () => {
    expect(() => pluginOptions('cdp', 130012)).toThrow(CdpError);
    expect(() => pluginOptions('cdp', 130012)).toThrow(/PostgreSQL 14 or newer/);
  });
});

describe('replicationError', () => {
  it('keeps the SQLSTATE and marks transient server conditions retryable', () => {
    for (const [code, retry] of [
      ['55006', true], // slot active for another process
      ['57P01', true], // admin shutdown / terminated
      ['57P03', true], // cannot connect now
      ['08006', true], // connection failure
      ['53300', true], // too many connections
      ['42704', false], // slot does not exist
      ['28000', false], // authorization
      ['XX000', false],
    ] as const) {
      const e = replicationError('ctx', dbError(code));
      expect(e.code).toBe(ErrorCodes.PG_ERROR);
      expect(e.details.sqlstate).toBe(code);
      expect(e.canRetry, code).toBe(retry);
      expect(e.message).toMatch(/^ctx: boom/);
    }
  });

  it('says what to do for a busy or missing slot', () => {
    expect(replicationError('x', dbError('55006')).message).toMatch(/another process is streaming from this slot/);
    expect(replicationError('x', dbError('42704')).message).toMatch(/create the slot first/);
  });

  it('maps socket failures to SOURCE_UNREACHABLE, retryable, with the errno', () => {
    const sock = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    const e = replicationError('replication', sock);
    expect(e.code).toBe(ErrorCodes.SOURCE_UNREACHABLE);
    expect(e.canRetry).toBe(true);
    expect(e.details.errno).toBe('ECONNRESET');
    expect(e.cause).toBe(sock);
    const term = replicationError('replication', new Error('Connection terminated unexpectedly'));
    expect(term.code).toBe(ErrorCodes.SOURCE_UNREACHABLE);
    expect(term.canRetry).toBe(true);
    expect(replicationError('x', 'a string').message).toMatch(/a string/);
  });

  it('passes CdpErrors through unchanged', () => {
    const orig = new CdpError(ErrorCodes.PROTOCOL, 'bad bytes');
    expect(replicationError('x', orig)).toBe(orig);
  });
});

describe('replicationOptions', () => {
  it('forces the output settings PostgreSQL logical replication uses, after any options of the user', () => {
    expect(REPLICATION_SESSION_OPTIONS).toBe('-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3');
    expect(replicationOptions(undefined)).toBe(REPLICATION_SESSION_OPTIONS);
    expect(replicationOptions('  ')).toBe(REPLICATION_SESSION_OPTIONS);
    expect(replicationOptions('-c statement_timeout=0')).toBe(`-c statement_timeout=0 ${REPLICATION_SESSION_OPTIONS}`);
  });
});

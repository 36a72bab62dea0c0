// Errors of the replication connection: anything pg or the socket throws, as a CdpError that keeps
// the SQLSTATE and says whether trying again later may work.

import pg from 'pg';
import { CdpError, ErrorCodes, pgError, toError } from '../errors.js';

// SQLSTATEs after which trying again later may work (Appendix A, PostgreSQL Error Codes).
function retryableSqlstate(code: string): boolean {
  return (
    code.startsWith('08') || // connection_exception
    code === '57P01' || // admin_shutdown
    code === '57P02' || // crash_shutdown
    code === '57P03' || // cannot_connect_now
    code === '53300' || // too_many_connections
    code === '55006' // object_in_use: the slot is active for another process
  );
}

function isDatabaseError(err: unknown): err is pg.DatabaseError {
  return (
    err instanceof pg.DatabaseError || (typeof (err as { severity?: unknown })?.severity === 'string' && typeof (err as { code?: unknown }).code === 'string')
  );
}

/** Normalises anything thrown by pg or the socket into a CdpError with the SQLSTATE kept. */
export function replicationError(context: string, err: unknown): CdpError {
  if (err instanceof CdpError) return err;
  if (isDatabaseError(err)) {
    const e = pgError(context, err, retryableSqlstate(err.code ?? ''));
    if (err.code === '55006') e.message += ' (another process is streaming from this slot; stop it or wait)';
    if (err.code === '42704') e.message += ' (create the slot first: cdp setup)';
    return e;
  }
  const e = toError(err);
  const errno = (e as { code?: unknown }).code;
  return new CdpError(ErrorCodes.SOURCE_UNREACHABLE, `${context}: ${e.message} (check that Postgres is running and reachable; retryable)`, {
    cause: e,
    canRetry: true,
    details: { errno: typeof errno === 'string' ? errno : undefined },
  });
}

import type { CommandContext } from '../context.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { registerHealth } from '../util/metrics.js';
import { formatLsn, type Lsn } from '../util/lsn.js';
import { sleep } from '../util/retry.js';
import { metrics } from './capture-metrics.js';
import { CaptureSession } from './session.js';

export { recordTooLarge } from './record-size.js';

// `cdp capture` (DESIGN.md sections 1 and 2): stream the slot with pgoutput, turn every change into
// an Avro change event, produce it to Kafka with an idempotent producer, and confirm to the slot
// only what Kafka has acknowledged (G1). Memory is bounded (G4): the replication stream buffers a
// bounded number of events and bytes, the pipeline one batch plus one request in flight.
//
// This module runs sessions (session.ts) one after another, with a backoff between them, until
// stopped or a failure retrying cannot fix.

export interface CaptureHandle {
  /** Resolves after a graceful stop (ctx.signal aborted); rejects on a fatal error. */
  done: Promise<void>;
  /** A snapshot for status displays and tests. */
  state(): CaptureState;
}

export interface CaptureState {
  phase: 'starting' | 'streaming' | 'retrying' | 'stopped' | 'failed';
  confirmedLsn: Lsn;
  sessions: number;
  lastError: string | null;
}

/**
 * Starts capturing in the background; `cdp capture` and `cdp run` (src/ops/run.ts) own the metrics
 * server around it. Stops when ctx.signal aborts.
 */
export async function startCapture(ctx: CommandContext): Promise<CaptureHandle> {
  const state: CaptureState = { phase: 'starting', confirmedLsn: 0, sessions: 0, lastError: null };
  registerHealth('capture', () => ({
    ok: state.phase === 'starting' || state.phase === 'streaming' || state.phase === 'stopped',
    detail: { phase: state.phase, confirmedLsn: formatLsn(state.confirmedLsn), sessions: state.sessions, lastError: state.lastError },
  }));
  const done = loop(ctx, state).then(
    () => {
      state.phase = 'stopped';
    },
    (err: unknown) => {
      state.phase = 'failed';
      state.lastError = toError(err).message;
      throw err;
    },
  );
  return { done, state: () => ({ ...state }) };
}

async function loop(ctx: CommandContext, state: CaptureState): Promise<void> {
  const { log, signal } = ctx;
  let failures = 0;
  while (!signal.aborted) {
    state.sessions++;
    const session = new CaptureSession(ctx, state);
    try {
      await session.run();
      return;
    } catch (raw) {
      const err = toError(raw);
      if (signal.aborted) return;
      if (isFatal(err)) throw err;
      // The slot is streamed by another process before this capture ever streamed (issue 14): a
      // second capture or run on the same slot. One line and exit 2 instead of warning forever;
      // later in a capture's life the same error is the previous connection's walsender not yet
      // gone, which retrying outlives.
      if (err instanceof CdpError && err.details.sqlstate === '55006' && state.sessions === 1 && !session.progressed) {
        const pid = /PID (\d+)/.exec(err.message)?.[1];
        throw new CdpError(
          ErrorCodes.USAGE,
          `replication slot ${ctx.cfg.source.slot} is in use${pid ? ` by PID ${pid}` : ''}: another cdp capture or cdp run streams from it. Stop it, or give this one its own slot (source.slot / CDP_SLOT, created by cdp setup); a process that died frees the slot within wal_sender_timeout`,
          { cause: err, details: { sqlstate: '55006' } },
        );
      }
      failures = session.progressed ? 1 : failures + 1;
      state.phase = 'retrying';
      state.lastError = err.message;
      metrics.restarts.inc();
      // Exponential backoff with full jitter, capped at 30 s; a session that made progress resets it.
      const delay = Math.floor(Math.random() * Math.min(30_000, 500 * 2 ** Math.min(failures, 10))) + 100;
      log.warn(
        { err: err.message, code: (err as CdpError).code, delayMs: delay, confirmedLsn: formatLsn(state.confirmedLsn) },
        'capture session ended with an error; restarting from the slot',
      );
      try {
        await sleep(delay, signal);
      } catch {
        return;
      }
    }
  }
}

/** Errors that retrying cannot fix: the operator must act (run setup, fix configuration, raise a limit). */
function isFatal(err: Error): boolean {
  if (!(err instanceof CdpError)) return false;
  if (err.code === ErrorCodes.SOURCE_NOT_READY || err.code === ErrorCodes.CONFIG_INVALID) return true;
  if (err.code === ErrorCodes.KAFKA && !err.canRetry && err.details.kafkaError === 'MESSAGE_TOO_LARGE') return true;
  const sqlstate = err.details.sqlstate;
  // 42704 undefined_object: slot or publication missing; 28P01/28000 authentication; 3D000 no database;
  // 42501 insufficient privilege.
  return sqlstate === '42704' || sqlstate === '28P01' || sqlstate === '28000' || sqlstate === '3D000' || sqlstate === '42501';
}

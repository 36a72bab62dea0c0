import type { CommandContext } from '../context.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { sleep } from '../util/retry.js';
import { startMetricsServer } from './metrics.js';
import { baseFailed, startArchiveGauges, startSourceGauges } from './gauges.js';
import { startWatchdog } from './watchdog.js';

// `cdp run`: capture + archive + the base-backup and compaction schedules in one process, for small installations
// (DESIGN.md section 1). The parts share one metrics server and one shutdown: the first signal stops
// all of them cleanly; a fatal error in one stops the others (a half-running pipeline would let the
// RPO grow silently), and the process exits non-zero so a supervisor restarts it.

/** `cdp capture`: metrics server + the capture loop, until SIGTERM (exit 0) or a fatal error. */
export async function runCapture(ctx: CommandContext): Promise<void> {
  const server = await startMetricsServer(ctx.cfg, ctx.log);
  try {
    const { startCapture } = await import('../capture/capture.js');
    const handle = await startCapture(ctx);
    const stopGauges = startSourceGauges(ctx);
    const dog = startWatchdog(['capture'], ctx.cfg.watchdog.stallSeconds * 1000, ctx.log);
    try {
      await Promise.race([handle.done, dog.stalled]);
    } finally {
      dog.stop();
      stopGauges();
    }
  } finally {
    await server.close();
  }
}

/** `cdp archive`: /metrics + /healthz, then the archiver until SIGTERM. */
export async function runArchive(ctx: CommandContext): Promise<void> {
  const metrics = await startMetricsServer(ctx.cfg, ctx.log);
  try {
    const { startArchiver } = await import('../archive/archiver.js');
    const { done } = await startArchiver(ctx);
    const stopGauges = startArchiveGauges(ctx);
    const dog = startWatchdog(['archive'], ctx.cfg.watchdog.stallSeconds * 1000, ctx.log);
    try {
      await Promise.race([done, dog.stalled]);
    } finally {
      dog.stop();
      stopGauges();
    }
  } catch (err) {
    const e = toError(err);
    // A CdpError (SHUTDOWN included, which the CLI maps to exit 0) goes up as it is.
    if (e instanceof CdpError) throw e;
    throw new CdpError(ErrorCodes.INTERNAL, `archiver failed: ${e.message}`, { cause: e });
  } finally {
    await metrics.close();
  }
}

/** `cdp run`: the three parts under one metrics server; the first failure stops the others. */
export async function runAll(ctx: CommandContext): Promise<void> {
  const metrics = await startMetricsServer(ctx.cfg, ctx.log);
  const inner = new AbortController();
  const stop = (reason: unknown) => {
    if (!inner.signal.aborted) inner.abort(reason);
  };
  if (ctx.signal.aborted) stop(ctx.signal.reason);
  else ctx.signal.addEventListener('abort', () => stop(ctx.signal.reason), { once: true });
  const child: CommandContext = { ...ctx, signal: inner.signal };

  const { startCapture } = await import('../capture/capture.js');
  const { startArchiver } = await import('../archive/archiver.js');
  let failure: Error | undefined;
  const watch = (name: string, p: Promise<void>) =>
    p.catch((raw: unknown) => {
      const err = toError(raw);
      if (err instanceof CdpError && err.code === ErrorCodes.SHUTDOWN) return;
      ctx.log.error({ err: err.message, component: name }, `${name} stopped with an error; stopping the others`);
      failure ??= err;
      stop(new CdpError(ErrorCodes.SHUTDOWN, `${name} failed`));
    });

  const stopGauges: Array<() => void> = [];
  try {
    const capture = await startCapture(child);
    const archive = await startArchiver(child);
    const { compactSchedule } = await import('../compact/compact.js');
    stopGauges.push(startArchiveGauges(child), startSourceGauges(child));
    const dog = startWatchdog(['capture', 'archive'], ctx.cfg.watchdog.stallSeconds * 1000, ctx.log);
    stopGauges.push(() => dog.stop());
    const parts = [
      watch(
        'watchdog',
        Promise.race([
          dog.stalled,
          new Promise<void>((resolve) => (inner.signal.aborted ? resolve() : inner.signal.addEventListener('abort', () => resolve(), { once: true }))),
        ]),
      ),
      watch('capture', capture.done),
      watch('archive', archive.done),
      watch('basebackup', baseSchedule(child)),
      watch('compact', compactSchedule(child)),
    ];
    await Promise.all(parts);
  } finally {
    for (const s of stopGauges) s();
    await metrics.close();
  }
  if (failure) throw failure instanceof CdpError ? failure : new CdpError(ErrorCodes.INTERNAL, failure.message, { cause: failure });
}

/**
 * Takes a base every basebackup.intervalHours (0 = never), the first one when the newest existing
 * base is already that old. A failed base is logged and retried after a few minutes: the changes
 * keep flowing meanwhile, so restores stay possible from the previous base.
 */
async function baseSchedule(ctx: CommandContext): Promise<void> {
  const hours = ctx.cfg.basebackup.intervalHours;
  if (hours <= 0) return;
  const intervalMs = hours * 3_600_000;
  const { takeBaseBackup } = await import('../base/basebackup.js');
  const { listBases } = await import('./status.js');
  const { createStore } = await import('../s3/client.js');
  const { archiveRoot } = await import('../config/config.js');
  const store = createStore(ctx.cfg, ctx.log, { signal: ctx.signal, maxElapsedMs: 60_000 });
  try {
    for (;;) {
      let waitMs = intervalMs;
      try {
        const bases = await listBases(store, archiveRoot(ctx.cfg));
        const newest = bases[bases.length - 1];
        const age = newest ? Date.now() - newest.timeMicros / 1000 : Infinity;
        if (age >= intervalMs) {
          ctx.log.info({ component: 'basebackup' }, 'scheduled base backup starting');
          await takeBaseBackup(ctx);
        } else {
          waitMs = intervalMs - age;
        }
      } catch (raw) {
        const err = toError(raw);
        if (ctx.signal.aborted) return;
        baseFailed();
        ctx.log.error({ err: err.message, component: 'basebackup' }, 'scheduled base backup failed; retrying in 5 minutes');
        waitMs = 5 * 60_000;
      }
      await sleep(Math.min(waitMs, 2 ** 31 - 1), ctx.signal);
    }
  } catch (raw) {
    if (ctx.signal.aborted) return;
    throw raw;
  }
}

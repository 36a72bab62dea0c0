import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import { startWatchdog } from '../../../src/ops/watchdog.js';
import { registerHealth } from '../../../src/util/metrics.js';

// Issue 14: a daemon that cannot make progress for watchdog.stallSeconds exits (STALLED, exit 1).

const log = pino({ level: 'silent' });
const settle = (p: Promise<unknown>, ms: number) =>
  Promise.race([
    p.then(
      () => 'resolved',
      (e: unknown) => e,
    ),
    new Promise((r) => setTimeout(() => r('pending'), ms)),
  ]);

describe('watchdog', () => {
  it('stays quiet while a component is healthy and its LSN moves; fires when it is unhealthy for stallMs', async () => {
    let ok = true;
    let lsn = 1;
    registerHealth('wd-a', () => ({ ok, detail: { phase: 'streaming', confirmedLsn: String(lsn) } }));
    const moving = setInterval(() => (lsn += 1), 20);
    const dog = startWatchdog(['wd-a'], 200, log);
    expect(await settle(dog.stalled, 500)).toBe('pending');
    ok = false;
    const err = await settle(dog.stalled, 1_000);
    clearInterval(moving);
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).code).toBe(ErrorCodes.STALLED);
    expect((err as CdpError).exitCode).toBe(1);
    expect((err as CdpError).message).toMatch(/no progress for \d+ s: wd-a not healthy/);
  });

  it('a streaming capture whose confirmed LSN does not move stalls; a recovery in time resets the clock', async () => {
    let ok = true;
    registerHealth('wd-b', () => ({ ok, detail: { phase: 'streaming', confirmedLsn: '0/10' } }));
    const dog = startWatchdog(['wd-b'], 300, log);
    const err = await settle(dog.stalled, 1_500);
    expect((err as CdpError).message).toMatch(/wd-b confirmed nothing/);

    registerHealth('wd-c', () => ({ ok }));
    ok = false;
    const dog2 = startWatchdog(['wd-c'], 400, log);
    await new Promise((r) => setTimeout(r, 200));
    ok = true;
    expect(await settle(dog2.stalled, 600)).toBe('pending');
    dog2.stop();
  });

  it('a component that stays in its starting phase (a first connection that hangs) stalls', async () => {
    registerHealth('wd-e', () => ({ ok: true, detail: { phase: 'starting', confirmedLsn: '0/0' } }));
    const dog = startWatchdog(['wd-e'], 200, log);
    const err = await settle(dog.stalled, 1_000);
    expect((err as CdpError).message).toMatch(/wd-e still starting/);
  });

  it('0 disables it', async () => {
    registerHealth('wd-d', () => ({ ok: false }));
    const dog = startWatchdog(['wd-d'], 0, log);
    expect(await settle(dog.stalled, 300)).toBe('pending');
  });
});

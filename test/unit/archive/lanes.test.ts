import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { attachConsumerGroup } from '../../../src/archive/archiver.js';
import type { StoredGap } from '../../../src/archive/chain.js';
import { ArchiveLanes, type CutPolicy, type LaneArchive, type LaneConsumer } from '../../../src/archive/lanes.js';
import type { PartitionState } from '../../../src/archive/layout.js';
import { emptyEvent, encodeChange } from '../../../src/format/change-event.js';

// The archiver's lanes with their two collaborators as plain fakes (no module mocks): the archive
// on S3 (segments, state pointers, gap markers) and the consumer group (commits, pause/resume, the
// lane-start positions). The consumer adapter (attachConsumerGroup) is driven by a fake kafkajs
// consumer that emits GROUP_JOIN.

const log = pino({ level: 'silent' });
const NEVER = { maxBytes: 1 << 30, maxAgeMs: 3_600_000 };

function fakes(opts: { committed?: bigint; state?: PartitionState; failStore?: boolean; hangStore?: (key: string) => boolean } = {}) {
  const calls: string[] = [];
  const gaps: Array<{ partition?: number; fromOffset?: string; toOffset?: string }> = [];
  // Each partition's state pointer; `state` is partition 0's at the start.
  const states = new Map<number, PartitionState>(opts.state ? [[0, opts.state]] : []);
  // Stores that hang (an S3 request that never answers) until released.
  const hung: Array<() => void> = [];
  const archive: LaneArchive = {
    storeSegment: async (key) => {
      if (opts.failStore) throw new Error('S3 says no');
      if (opts.hangStore?.(key)) await new Promise<void>((r) => hung.push(r));
      calls.push(`store ${key.includes('/') ? 'segment' : key}`);
      return 'created';
    },
    readPartitionState: async (p) => states.get(p),
    advancePartitionState: async (next) => {
      calls.push(`pointer ${next.lastOffset}`);
      const st = { ...next, updatedAt: '' } as PartitionState;
      states.set(next.partition, st);
      return st;
    },
    recordGap: async (g) => {
      gaps.push(g);
      calls.push(`gap ${g.fromOffset}-${g.toOffset}`);
      return { ...g, key: 'k' } as unknown as StoredGap;
    },
  };
  const paused = new Set<number>();
  const consumer: LaneConsumer & { committed: bigint } = {
    committed: opts.committed ?? -1n,
    commit: async (p, off) => {
      calls.push(`commit ${p}:${off}`);
    },
    pause: (p) => paused.add(p),
    resume: (p) => paused.delete(p),
    position: async () => ({ committed: consumer.committed, low: '0', high: '1000' }),
  };
  const release = () => hung.splice(0).forEach((r) => r());
  return { archive, consumer, calls, gaps, paused, release };
}

function lanesOf(f: ReturnType<typeof fakes>, extra: { cutPolicy?: CutPolicy; maxPendingBytes?: number } = {}) {
  const segs: Array<{ first: bigint; last: bigint; count: number }> = [];
  const fatal: Error[] = [];
  const lanes = new ArchiveLanes(f.archive, f.consumer, {
    root: 'root/db',
    topic: 'cdp.db',
    log,
    keyring: undefined,
    codec: 'zstandard',
    zstdLevel: 1,
    generation: { generation: 0, topicEpoch: 0 },
    limits: NEVER,
    cutPolicy: extra.cutPolicy,
    idlePointerIntervalMs: 1_000,
    maxPendingBytes: extra.maxPendingBytes ?? 1 << 30,
    storeSignal: new AbortController().signal,
    onFatal: (e) => fatal.push(e),
    onSegmentStored: (seg) => segs.push({ first: BigInt(seg.name.firstOffset), last: BigInt(seg.name.lastOffset), count: seg.manifest.count }),
  });
  const stop = async () => {
    lanes.beginStop();
    await lanes.cutAll();
    await lanes.drain();
  };
  return { lanes, segs, fatal, stop };
}

function batch(offsets: number[], partition = 0) {
  return {
    partition,
    highWatermark: String(offsets.at(-1)! + 1),
    messages: offsets.map((o) => ({
      offset: String(o),
      value: encodeChange(emptyEvent({ op: 'COMMIT', database: 'db', commitLsn: 1000 + o, xid: o, commitTime: o, position: 0, endLsn: 1001 + o })),
    })),
  };
}

/** Watermark records (no changes: an idle lane) at these offsets, with watermark LSN 5000 + offset. */
function watermarks(offsets: number[], partition = 0) {
  return {
    partition,
    highWatermark: String(offsets.at(-1)! + 1),
    messages: offsets.map((o) => ({
      offset: String(o),
      value: encodeChange(
        emptyEvent({
          op: 'WATERMARK',
          database: 'db',
          commitLsn: 5000 + o,
          xid: 0,
          commitTime: o,
          position: 0,
          endLsn: 5000 + o,
          content: JSON.stringify({ partition }),
        }),
      ),
    })),
  };
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!ok()) throw new Error(`timed out waiting for ${what}`);
}

function control() {
  const resolved: string[] = [];
  return { resolved, ctl: { resolveOffset: (o: string) => resolved.push(o), heartbeat: async () => {}, running: () => true } };
}

const contiguous = (s: { first: bigint; last: bigint; count: number }) => BigInt(s.count) === s.last - s.first + 1n;

describe('archiver lanes', () => {
  it('store, then pointer, then commit, in that order, for each segment (G1)', async () => {
    const f = fakes();
    const a = lanesOf(f);
    await a.lanes.handleBatch(batch([0, 1, 2]), control().ctl);
    await a.stop();
    expect(f.calls).toEqual(['store segment', 'pointer 2', 'commit 0:3']);
    expect(a.segs.map((s) => `${s.first}-${s.last}`)).toEqual(['0-2']);
  });

  it('resolves every record it takes, and cuts where the pluggable cut policy says', async () => {
    const f = fakes();
    const everyTwo: CutPolicy = (open) => (open && open.count >= 2 ? 'size' : undefined);
    const a = lanesOf(f, { cutPolicy: everyTwo });
    const c = control();
    await a.lanes.handleBatch(batch([0, 1, 2]), c.ctl);
    await a.lanes.drain();
    await a.lanes.handleBatch(batch([3, 4]), c.ctl);
    await a.stop();
    expect(c.resolved).toEqual(['0', '1', '2', '3', '4']);
    expect(a.segs.map((s) => `${s.first}-${s.last}`)).toEqual(['0-1', '2-3', '4-4']);
  });

  it('pauses the partition when two segments wait for S3, and resumes it once they are stored', async () => {
    const f = fakes();
    const a = lanesOf(f, { cutPolicy: (open) => (open && open.count >= 1 ? 'size' : undefined) });
    const c = control();
    await a.lanes.handleBatch(batch([0, 1, 2, 3]), c.ctl);
    expect(c.resolved).toEqual(['0', '1']); // stopped taking records at the bound: fetched again from 2
    expect(f.paused.has(0)).toBe(true);
    await a.lanes.drain();
    expect(f.paused.has(0)).toBe(false);
    await a.stop();
  });

  it('a store that fails is fatal: the archiver is told once, nothing is committed', async () => {
    const f = fakes({ failStore: true });
    const a = lanesOf(f);
    await a.lanes.handleBatch(batch([0, 1]), control().ctl);
    await a.stop();
    expect(a.fatal.map((e) => e.message)).toEqual(['S3 says no']);
    expect(f.calls.filter((c) => c.startsWith('commit'))).toEqual([]);
    expect(a.lanes.health().ok).toBe(false);
  });

  it('a forward jump within one membership cuts the open segment before it, and records the hole as a gap', async () => {
    const f = fakes({ committed: 5n });
    const a = lanesOf(f);
    await a.lanes.handleBatch(batch([5, 6, 7]), control().ctl);
    await a.lanes.handleBatch(batch([12, 13]), control().ctl);
    await a.stop();
    for (const s of a.segs) expect(contiguous(s), `segment ${s.first}..${s.last} holds ${s.count} records`).toBe(true);
    expect(a.segs.map((s) => `${s.first}-${s.last}`)).toEqual(['5-7', '12-13']);
    expect(f.gaps.map((g) => `${g.partition}:${g.fromOffset}-${g.toOffset}`)).toEqual(['0:8-11']);
  });

  it('a first offset past the committed one (records deleted before archiving) is recorded as a gap before anything is stored', async () => {
    const f = fakes({ committed: 5n });
    const a = lanesOf(f);
    await a.lanes.handleBatch(batch([40, 41]), control().ctl);
    await a.stop();
    expect(f.calls[0]).toBe('gap 5-39');
    expect(a.segs.map((s) => `${s.first}-${s.last}`)).toEqual(['40-41']);
  });

  it('refuses a partition that ends before what the archive holds (topic recreated behind its back)', async () => {
    const f = fakes({
      state: { partition: 0, watermarkLsn: 1, watermarkTime: 1, lastOffset: '5000', lastKey: 'k', epoch: 0, updatedAt: '' } as PartitionState,
    });
    const a = lanesOf(f);
    await expect(a.lanes.handleBatch(batch([5001]), control().ctl)).rejects.toThrow(/ends at offset 1000, but the archive already holds offsets up to 5000/);
    expect(a.fatal).toHaveLength(1);
  });
});

describe('archiver health: a lane with segments stuck on S3', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('is a stall after two minutes even while another, idle lane keeps moving its pointer', async () => {
    // Only Date is faked (the stall clock); promises and timers stay real.
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = new Date('2026-11-29T12:00:00Z').getTime();
    vi.setSystemTime(t0);
    const f = fakes({ hangStore: (key) => key.includes('/p0001/') });
    // Cut at three changes; watermark-only segments stay open (idle lanes).
    const a = lanesOf(f, { cutPolicy: (open) => ((open?.changes ?? 0) >= 3 ? 'size' : undefined) });
    await a.lanes.handleBatch(batch([0, 1, 2], 0), control().ctl);
    await until('partition 0 stored', () => f.calls.includes('commit 0:3'));
    await a.lanes.handleBatch(batch([0, 1, 2], 1), control().ctl); // its upload hangs
    await until('partition 1 uploading', () => a.lanes.health(t0).detail.pendingBytes !== 0);
    // Partition 0 goes idle: only watermarks, its pointer follows them every second.
    let next = 3;
    const pointers = () => f.calls.filter((c) => c === 'pointer 2').length;
    for (let s = 10; s <= 130; s += 10) {
      vi.setSystemTime(t0 + s * 1000);
      const before = pointers();
      await a.lanes.handleBatch(watermarks([next++], 0), control().ctl);
      a.lanes.tick();
      await until(`idle pointer at ${s} s`, () => pointers() > before);
    }
    expect(f.calls.filter((c) => c === 'commit 1:3')).toEqual([]);
    const h = a.lanes.health();
    expect(h.ok, JSON.stringify(h.detail)).toBe(false);
    expect(h.detail.stalledPartitions).toEqual([1]);
    // Before two minutes it was not a stall; once S3 answers, it is not one any more.
    expect(a.lanes.health(t0 + 100_000).ok).toBe(true);
    f.release();
    await until('partition 1 stored', () => f.calls.includes('commit 1:3'));
    expect(a.lanes.health().ok).toBe(true);
    await a.stop();
  });

  it('an idle lane moving its pointer while no segment waits anywhere is healthy', async () => {
    const f = fakes();
    const a = lanesOf(f, { cutPolicy: (open) => ((open?.changes ?? 0) >= 3 ? 'size' : undefined) });
    await a.lanes.handleBatch(batch([0, 1, 2], 0), control().ctl);
    await until('partition 0 stored', () => f.calls.includes('commit 0:3'));
    await a.lanes.handleBatch(watermarks([3], 0), control().ctl);
    a.lanes.tick(Date.now() + 5_000);
    await until('idle pointer', () => f.calls.filter((c) => c === 'pointer 2').length === 2);
    expect(a.lanes.health(Date.now() + 600_000).ok).toBe(true);
    await a.stop();
  });
});

describe('the consumer adapter across a rebalance', () => {
  // Member A evicted (coordinator outage > session timeout) while holding open records C..N of
  // partition p, member B archiving and committing up to X-1, and A rejoining with p again; kafkajs
  // then fetches p from X. No stored segment may span the hole N+1..X-1 (restore reads a
  // partition's segments in offset order and drops by identity what it has seen: a segment
  // [C..N, X..] would hide B's N+1..X-1).
  it('after a rejoin that keeps the partition, open records are not glued to the fetch from the new committed offset', async () => {
    const f = fakes({ committed: 5n });
    const a = lanesOf(f);
    const events = new EventEmitter();
    const consumer = { events: { GROUP_JOIN: 'group_join', CRASH: 'crash' }, on: (ev: string, fn: (...args: any[]) => void) => events.on(ev, fn) };
    const eachBatch = attachConsumerGroup(consumer as never, a.lanes, { topic: 'cdp.db', groupId: 'g', log });
    const payload = (offsets: number[]) => {
      const { ctl } = control();
      return { batch: batch(offsets), resolveOffset: ctl.resolveOffset, heartbeat: ctl.heartbeat, isRunning: () => true, isStale: () => false } as never;
    };
    events.emit('group_join', { payload: { memberAssignment: { 'cdp.db': [0] } } });
    await eachBatch(payload([5, 6, 7, 8, 9])); // open C..N = 5..9, not cut (large size and age limits)
    f.consumer.committed = 20n; // B archived 10..19 and committed 20; A rejoins, kafkajs fetches from 20
    events.emit('group_join', { payload: { memberAssignment: { 'cdp.db': [0] } } });
    await eachBatch(payload([20, 21, 22]));
    await a.stop();
    for (const s of a.segs) expect(contiguous(s), `segment ${s.first}..${s.last} holds ${s.count} records`).toBe(true);
    expect(a.segs.map((s) => `${s.first}-${s.last}`)).toEqual(['20-22']);
    expect(f.gaps).toEqual([]); // the group's committed offset says where the partition continues
  });

  it('a consumer crash kafkajs does not restart is fatal', () => {
    const f = fakes();
    const a = lanesOf(f);
    const events = new EventEmitter();
    const consumer = { events: { GROUP_JOIN: 'group_join', CRASH: 'crash' }, on: (ev: string, fn: (...args: any[]) => void) => events.on(ev, fn) };
    attachConsumerGroup(consumer as never, a.lanes, { topic: 'cdp.db', groupId: 'g', log });
    events.emit('crash', { payload: { restart: true, error: new Error('blip') } });
    expect(a.fatal).toEqual([]);
    events.emit('crash', { payload: { restart: false, error: new Error('gone') } });
    expect(a.fatal.map((e) => e.message)).toEqual(['Kafka consumer stopped: gone']);
  });
});

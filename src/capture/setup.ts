import type { Admin } from 'kafkajs';
import type pg from 'pg';
import type { CommandContext } from '../context.js';
import { sourceDatabase, topicName, type Config } from '../config/config.js';
import { CdpError, ErrorCodes, pgError } from '../errors.js';
import { createKafka } from '../kafka/client.js';
import { createStore, type Store } from '../s3/client.js';
import type { Logger } from '../util/log.js';
import { withTimeout } from '../util/timeout.js';
import { connectCatalog, identifySystem } from './source.js';
import { redactUrl } from '../util/redact.js';
import { createSlotSql, existingSlotFailoverWarning, failoverSlotProblem } from './failover.js';
import { checkArchive, recordBreak, writeArchiveManifest, type ArchiveState } from './setup-archive.js';
import { describe, type Findings } from './setup-findings.js';
import { checkKafka, createTopic, type KafkaState } from './setup-kafka.js';
import { checkSource, createInSource, type SourceState } from './setup-source.js';

// `cdp setup` (DESIGN.md section 6): create or check the publication, the DDL capture, the Kafka
// topic, the archive manifest and, last, the replication slot. Idempotent, and never half-done:
// every check runs first and every blocking problem is reported together (exit 2); only then is
// anything created, the slot last, because a slot retains WAL from the moment it exists.
//
// The steps, each checking and creating one thing: setup-source.ts (server, role, slot, tables,
// and the transaction that creates the publication and DDL capture), setup-publication.ts,
// setup-ddl-capture.ts (event triggers), setup-kafka.ts (topic), setup-archive.ts (archive.json,
// chain of custody). This module orders them.

export { TOPIC_MAX_MESSAGE_BYTES } from './setup-kafka.js';
export { DDL_CAPTURE_SQL } from './setup-ddl-capture.js';

/**
 * Setup found blocking problems and created nothing. Exit 2 (bad configuration or a source not
 * ready); the CLI prints every problem, one per line.
 */
export class SetupRefused extends CdpError {
  constructor(readonly problems: string[]) {
    super(ErrorCodes.SOURCE_NOT_READY, `setup cannot proceed; nothing was created: ${problems.join('; ')}`);
    this.name = 'SetupRefused';
  }
}

/** The connections setup opens, closed by setup() whatever happens. */
interface Connections {
  client?: pg.Client;
  admin?: Admin;
}

/** What the checks found out, each part absent when its check could not run (a problem says why). */
interface Checked {
  source?: SourceState;
  systemId?: string;
  kafka?: KafkaState;
  archive?: ArchiveState;
}

/** Checks, then creates what is missing; the first base backup is taken by `cdp setup` (src/ops/setup.ts). */
export async function setup(ctx: CommandContext, opts: { replicaIdentityFull?: boolean } = {}): Promise<void> {
  const { log } = ctx;
  const cfg: Config = opts.replicaIdentityFull ? { ...ctx.cfg, source: { ...ctx.cfg.source, keylessTables: 'full' } } : ctx.cfg;
  const findings: Findings = { problems: [], warnings: [] };
  const topic = topicName(cfg);
  const database = sourceDatabase(cfg);
  log.info({ source: redactUrl(cfg.source.url), slot: cfg.source.slot, publication: cfg.source.publication, topic }, 'setup: checking');

  const conns: Connections = {};
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 20_000 });
  try {
    // ---- 1. Check everything, create nothing.
    const { source, systemId, kafka, archive } = await checkAll(cfg, log, store, conns, findings);
    const { client, admin } = conns;

    for (const w of findings.warnings) log.warn(w);
    if (findings.problems.length > 0 || !source || !kafka || !archive || !client || !admin || !systemId) {
      for (const p of findings.problems) log.error(p);
      throw new SetupRefused(findings.problems);
    }

    // ---- 2. Create what is missing: archive manifest, topic, publication + DDL capture, slot last.
    if (!archive.manifestExists) await writeArchiveManifest(store, cfg, database, systemId, topic, log);
    if (!kafka.topicExists) {
      await createTopic(admin, cfg, topic);
      log.info({ topic, partitions: cfg.kafka.partitions }, 'setup: Kafka topic created');
    }
    await createInSource(client, cfg, source, log);
    const slotLsn = source.slotExists ? undefined : await createSlot(client, cfg, log);
    if (archive.manifestExists) {
      await recordBreak({ store, cfg, admin, client, topic, topicCreated: !kafka.topicExists, slotCreated: !source.slotExists, slotLsn }, log);
    }
    log.info({ warnings: findings.warnings.length }, 'setup: done');
  } finally {
    await conns.client?.end().catch(() => {});
    await conns.admin?.disconnect().catch(() => {});
    store.client.destroy();
  }
}

/** Every check: the source, Kafka, the archive. A check that cannot run adds a problem; the others still run. */
async function checkAll(cfg: Config, log: Logger, store: Store, conns: Connections, findings: Findings): Promise<Checked> {
  const topic = topicName(cfg);
  const database = sourceDatabase(cfg);
  const checked: Checked = {};
  try {
    const client = await connectCatalog(cfg, 'katya-cdp-setup');
    conns.client = client;
    const source = await checkSource(client, cfg, findings);
    checked.source = source;
    if (source) {
      const fp = failoverSlotProblem(cfg.source.failoverSlot, source.serverVersionNum);
      if (fp) findings.problems.push(fp);
      else if (source.slotExists) {
        const fw = await existingSlotFailoverWarning(client, cfg.source.slot, cfg.source.failoverSlot, source.serverVersionNum);
        if (fw) findings.warnings.push(fw);
      }
    }
    if (source) checked.systemId = (await identifySystem(cfg)).systemId;
  } catch (err) {
    findings.problems.push(describe(err));
  }
  try {
    const admin = createKafka(cfg, log, 'setup').admin();
    conns.admin = admin;
    const noAnswer = `Kafka brokers ${cfg.kafka.brokers.join(',')} did not answer within 20 s`;
    await withTimeout(admin.connect(), 20_000, () => new CdpError(ErrorCodes.KAFKA, noAnswer, { canRetry: true }));
    checked.kafka = await checkKafka(admin, cfg, topic, findings);
  } catch (err) {
    findings.problems.push(`Kafka is not usable: ${describe(err)}; check kafka.brokers / CDP_KAFKA_BROKERS and that the brokers are up`);
  }
  try {
    checked.archive = await checkArchive(store, cfg, topic, database, findings);
  } catch (err) {
    findings.problems.push(describe(err));
  }
  return checked;
}

/** The replication slot, created last: it retains WAL from the moment it exists. Returns its LSN. */
async function createSlot(client: pg.Client, cfg: Config, log: Logger): Promise<number> {
  let slotLsn: number;
  try {
    const r = await client.query<{ l: string }>(createSlotSql(cfg.source.failoverSlot), [cfg.source.slot]);
    slotLsn = Number(r.rows[0]!.l);
  } catch (err) {
    throw pgError(`cannot create replication slot ${cfg.source.slot}`, err);
  }
  log.info({ slot: cfg.source.slot }, 'setup: replication slot created (it retains WAL until capture confirms it: start `cdp capture` soon)');
  return slotLsn;
}

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Admin } from 'kafkajs';
import type pg from 'pg';
import { recordSetupBreak } from '../archive/chain.js';
import { archiveManifestKey, type ArchiveManifest } from '../archive/layout.js';
import type { CommandContext } from '../context.js';
import { archiveRoot, sourceDatabase, topicName, type Config } from '../config/config.js';
import { CdpError, ErrorCodes, pgError, toError } from '../errors.js';
import { createKafka } from '../kafka/client.js';
import { checkBucket, createStore, getObjectIfExists, putOnce, type Store } from '../s3/client.js';
import type { Logger } from '../util/log.js';
import { withTimeout } from '../util/timeout.js';
import { hmacPads } from './ddl-auth.js';
import { connectCatalog, identifySystem } from './source.js';
import { redactUrl } from '../util/redact.js';
import { createSlotSql, existingSlotFailoverWarning, failoverSlotProblem } from './failover.js';

// `cdp setup` (DESIGN.md section 6): create or check the publication, the DDL capture, the Kafka
// topic, the archive manifest and, last, the replication slot. Idempotent, and never half-done:
// every check runs first and every blocking problem is reported together (exit 2); only then is
// anything created, the slot last, because a slot retains WAL from the moment it exists.

/** Kafka topic max.message.bytes: one change event carries a whole row (TOASTed values up to 1 GB
 * are possible in Postgres; Kafka's default of 1 MB would reject ordinary large rows). */
export const TOPIC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * The DDL capture event triggers (ddl-capture.sql): name, event, function. Triggers of one event
 * fire in name order: the invoker's one (…_a), then the one that signs and emits (…_end), then the
 * keyless-table one (…_keyless).
 */
const EVENT_TRIGGER_DEFS: Array<[string, string, string]> = [
  ['katya_cdp_sql_drop', 'sql_drop', 'katya_cdp.on_sql_drop()'],
  ['katya_cdp_table_rewrite', 'table_rewrite', 'katya_cdp.on_table_rewrite()'],
  ['katya_cdp_ddl_command_a', 'ddl_command_end', 'katya_cdp.on_ddl_invoker()'],
  ['katya_cdp_ddl_command_end', 'ddl_command_end', 'katya_cdp.on_ddl_command_end()'],
  ['katya_cdp_ddl_command_keyless', 'ddl_command_end', 'katya_cdp.on_ddl_keyless()'],
];
const EVENT_TRIGGERS = EVENT_TRIGGER_DEFS.map(([name]) => name);

export const DDL_CAPTURE_SQL = readFileSync(new URL('./ddl-capture.sql', import.meta.url), 'utf8');

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

interface Findings {
  problems: string[];
  warnings: string[];
}

interface SourceState {
  superuser: boolean;
  serverVersionNum: number;
  publicationExists: boolean;
  slotExists: boolean;
  ddlCaptureInstalled: boolean;
  ddlCapturePossible: boolean;
  /** Resolved "schema"."table" names of source.tables (FOR TABLE list). */
  tableIdents: string[];
  /** Published tables without a usable replica identity (format('%I.%I')). */
  keyless: string[];
}

interface KafkaState {
  topicExists: boolean;
}

interface ArchiveState {
  manifestExists: boolean;
}

/** Checks, then creates what is missing; the first base backup is taken by `cdp setup` (src/ops/setup.ts). */
export async function setup(ctx: CommandContext, opts: { replicaIdentityFull?: boolean } = {}): Promise<void> {
  const { log } = ctx;
  const cfg: Config = opts.replicaIdentityFull ? { ...ctx.cfg, source: { ...ctx.cfg.source, keylessTables: 'full' } } : ctx.cfg;
  const findings: Findings = { problems: [], warnings: [] };
  const topic = topicName(cfg);
  const database = sourceDatabase(cfg);
  log.info({ source: redactUrl(cfg.source.url), slot: cfg.source.slot, publication: cfg.source.publication, topic }, 'setup: checking');

  let client: pg.Client | undefined;
  let admin: Admin | undefined;
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 20_000 });
  try {
    // ---- 1. Check everything, create nothing.
    let source: SourceState | undefined;
    let systemId: string | undefined;
    try {
      client = await connectCatalog(cfg, 'katya-cdp-setup');
      source = await checkSource(client, cfg, findings);
      if (source) {
        const fp = failoverSlotProblem(cfg.source.failoverSlot, source.serverVersionNum);
        if (fp) findings.problems.push(fp);
        else if (source.slotExists) {
          const fw = await existingSlotFailoverWarning(client, cfg.source.slot, cfg.source.failoverSlot, source.serverVersionNum);
          if (fw) findings.warnings.push(fw);
        }
      }
      if (source) systemId = (await identifySystem(cfg)).systemId;
    } catch (err) {
      findings.problems.push(describe(err));
    }
    let kafka: KafkaState | undefined;
    try {
      admin = createKafka(cfg, log, 'setup').admin();
      const noAnswer = `Kafka brokers ${cfg.kafka.brokers.join(',')} did not answer within 20 s`;
      await withTimeout(admin.connect(), 20_000, () => new CdpError(ErrorCodes.KAFKA, noAnswer, { canRetry: true }));
      kafka = await checkKafka(admin, cfg, topic, findings);
    } catch (err) {
      findings.problems.push(`Kafka is not usable: ${describe(err)}; check kafka.brokers / CDP_KAFKA_BROKERS and that the brokers are up`);
    }
    let archive: ArchiveState | undefined;
    try {
      archive = await checkArchive(store, cfg, topic, database, findings);
    } catch (err) {
      findings.problems.push(describe(err));
    }

    for (const w of findings.warnings) log.warn(w);
    if (findings.problems.length > 0 || !source || !kafka || !archive || !client || !admin || !systemId) {
      for (const p of findings.problems) log.error(p);
      throw new SetupRefused(findings.problems);
    }

    // ---- 2. Create what is missing: archive manifest, topic, publication + DDL capture, slot last.
    if (!archive.manifestExists) {
      const manifest: ArchiveManifest = {
        version: 1,
        database,
        systemId,
        topic,
        partitions: cfg.kafka.partitions,
        createdAt: new Date().toISOString(),
      };
      await putOnce(store, archiveManifestKey(archiveRoot(cfg)), Buffer.from(JSON.stringify(manifest, null, 2) + '\n'), { contentType: 'application/json' });
      log.info({ key: archiveManifestKey(archiveRoot(cfg)) }, 'setup: archive manifest written');
    }
    if (!kafka.topicExists) {
      await createTopic(admin, cfg, topic);
      log.info({ topic, partitions: cfg.kafka.partitions }, 'setup: Kafka topic created');
    }
    await createInSource(client, cfg, source, log);
    let slotLsn: number | undefined;
    if (!source.slotExists) {
      try {
        const r = await client.query<{ l: string }>(createSlotSql(cfg.source.failoverSlot), [cfg.source.slot]);
        slotLsn = Number(r.rows[0]!.l);
      } catch (err) {
        throw pgError(`cannot create replication slot ${cfg.source.slot}`, err);
      }
      log.info({ slot: cfg.source.slot }, 'setup: replication slot created (it retains WAL until capture confirms it: start `cdp capture` soon)');
    }
    // Chain of custody (archive/chain.ts): a slot or topic created again under an existing archive
    // is a break in the stream, recorded before capture can write into it; if recording fails, the
    // new slot goes again, so that the next setup sees (and records) the same break.
    if (archive.manifestExists) {
      try {
        const brk = await recordSetupBreak({
          store,
          root: archiveRoot(cfg),
          cfg,
          admin,
          client,
          topic,
          topicCreated: !kafka.topicExists,
          slotCreated: !source.slotExists,
          slotLsn,
        });
        if (brk)
          log.warn(
            { generation: brk.generation.generation, topicEpoch: brk.generation.topicEpoch, gap: brk.gap?.key },
            `setup: the stream was broken (${brk.generation.reason}): gap recorded, new stream generation started; restores across the break are refused, take a base after it`,
          );
      } catch (err) {
        if (!source.slotExists) await client.query('SELECT pg_catalog.pg_drop_replication_slot($1)', [cfg.source.slot]).catch(() => {});
        throw err;
      }
    }
    log.info({ warnings: findings.warnings.length }, 'setup: done');
  } finally {
    await client?.end().catch(() => {});
    await admin?.disconnect().catch(() => {});
    store.client.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Source database

/** One catalog query of the checks; a failure is a CdpError naming setup. */
type Query = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<R[]>;

interface ServerFacts {
  wal_level: string;
  max_slots: number;
  max_senders: number;
  version_num: number;
  rolsuper: boolean;
  rolreplication: boolean;
  can_create: boolean;
  used_slots: number;
}

/** Every check of the source, in order; each adds what it finds to `f` (problems block, warnings do not). */
async function checkSource(client: pg.Client, cfg: Config, f: Findings): Promise<SourceState | undefined> {
  const q: Query = async <R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<R[]> => {
    try {
      return (await client.query<R>(text, values)).rows;
    } catch (err) {
      throw pgError('setup check failed', err);
    }
  };
  const s = await checkServer(q, f);
  const slotExists = await checkSlot(q, cfg, s, f);
  const { tableIdents, tableOids } = await resolveTables(q, cfg, f);
  const publicationExists = await checkPublication(q, cfg, s, tableIdents, tableOids, f);
  const ddlCaptureInstalled = await checkDdlCapture(q, s, f);
  const keyless = await checkPublishedTables(q, cfg, tableOids, f);
  await checkLargeObjects(q, f);
  return {
    superuser: s.rolsuper,
    serverVersionNum: s.version_num,
    publicationExists,
    slotExists,
    ddlCaptureInstalled,
    ddlCapturePossible: s.rolsuper,
    tableIdents,
    keyless,
  };
}

/** Server version, wal_level, WAL senders and the role's rights. */
async function checkServer(q: Query, f: Findings): Promise<ServerFacts> {
  const [s] = await q<ServerFacts>(`SELECT current_setting('wal_level') AS wal_level,
             current_setting('max_replication_slots')::int AS max_slots,
             current_setting('max_wal_senders')::int AS max_senders,
             current_setting('server_version_num')::int AS version_num,
             r.rolsuper, r.rolreplication,
             has_database_privilege(current_database(), 'CREATE') AS can_create,
             (SELECT count(*)::int FROM pg_replication_slots) AS used_slots
        FROM pg_roles r WHERE r.rolname = current_user`);
  if (!s) throw new CdpError(ErrorCodes.PG_ERROR, 'cannot read the current role from pg_roles');
  if (s.version_num < 150000) f.problems.push(`PostgreSQL ${s.version_num} is not supported: PostgreSQL 15 or newer is required`);
  if (s.wal_level !== 'logical') {
    f.problems.push(`wal_level is '${s.wal_level}', logical decoding needs 'logical': run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL`);
  }
  if (s.max_senders < 1) f.problems.push('max_wal_senders is 0: set it to at least 2 in postgresql.conf and restart PostgreSQL');
  if (!s.rolsuper && !s.rolreplication) {
    f.problems.push('the role has neither SUPERUSER nor REPLICATION: run ALTER ROLE <role> REPLICATION (needed for the slot and for capture)');
  }

  return s;
}

/** An existing slot of that name must be a logical pgoutput slot of this database; else a free slot must remain. */
async function checkSlot(q: Query, cfg: Config, s: ServerFacts, f: Findings): Promise<boolean> {
  const [slot] = await q<{ plugin: string | null; slot_type: string; database: string | null; temporary: boolean }>(
    'SELECT plugin, slot_type, database, temporary FROM pg_replication_slots WHERE slot_name = $1',
    [cfg.source.slot],
  );
  if (slot) {
    const db = (await q<{ db: string }>('SELECT current_database() AS db'))[0]!.db;
    if (slot.slot_type !== 'logical' || slot.plugin !== 'pgoutput' || slot.database !== db) {
      f.problems.push(
        `replication slot ${cfg.source.slot} exists but is ${slot.slot_type}/${slot.plugin ?? '-'} on database ${slot.database ?? '-'}, not logical/pgoutput on ${db}: choose another source.slot or drop it with SELECT pg_drop_replication_slot('${cfg.source.slot}')`,
      );
    }
  } else if (s.used_slots >= s.max_slots) {
    f.problems.push(`all ${s.max_slots} replication slots are in use (max_replication_slots): raise it and restart PostgreSQL, or drop an unused slot`);
  }

  return Boolean(slot);
}

/** Configured tables must exist; resolved to schema-qualified identifiers. Configured schemas must exist. */
async function resolveTables(q: Query, cfg: Config, f: Findings): Promise<{ tableIdents: string[]; tableOids: number[] }> {
  const tableIdents: string[] = [];
  const tableOids: number[] = [];
  for (const t of cfg.source.tables) {
    const rows = await q<{ oid: number | null; ident: string | null }>(
      `SELECT c.oid::int AS oid, format('%I.%I', n.nspname, c.relname) AS ident
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = to_regclass($1)`,
      [t],
    );
    if (!rows[0]) f.problems.push(`source.tables: table ${t} does not exist`);
    else {
      tableIdents.push(rows[0].ident!);
      tableOids.push(rows[0].oid!);
    }
  }
  for (const sch of cfg.source.schemas) {
    const rows = await q('SELECT 1 FROM pg_namespace WHERE nspname = $1', [sch]);
    if (rows.length === 0) f.problems.push(`source.schemas: schema ${sch} does not exist`);
  }

  return { tableIdents, tableOids };
}

/** The publication: whether the role can create it, or whether the existing one matches the configuration. */
async function checkPublication(q: Query, cfg: Config, s: ServerFacts, tableIdents: string[], tableOids: number[], f: Findings): Promise<boolean> {
  const [pub] = await q<{ oid: number; puballtables: boolean; pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean }>(
    'SELECT oid::int, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1',
    [cfg.source.publication],
  );
  const wanted =
    cfg.source.tables.length > 0
      ? `FOR TABLE ${tableIdents.join(', ')}`
      : cfg.source.schemas.length > 0
        ? `FOR TABLES IN SCHEMA ${cfg.source.schemas.join(', ')}`
        : 'FOR ALL TABLES';
  if (pub) {
    const schemas = (
      await q<{ nspname: string }>('SELECT n.nspname FROM pg_publication_namespace pn JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE pn.pnpubid = $1', [
        pub.oid,
      ])
    ).map((r) => r.nspname);
    const rels = (await q<{ oid: number }>('SELECT prrelid::int AS oid FROM pg_publication_rel WHERE prpubid = $1', [pub.oid])).map((r) => r.oid);
    const matches =
      cfg.source.tables.length > 0
        ? !pub.puballtables && schemas.length === 0 && sameSet(rels, tableOids)
        : cfg.source.schemas.length > 0
          ? !pub.puballtables && rels.length === 0 && sameSet(schemas, cfg.source.schemas)
          : pub.puballtables;
    if (!matches) {
      f.problems.push(
        `publication ${cfg.source.publication} exists with a different definition than configured (${wanted}): change it with ALTER PUBLICATION, or DROP PUBLICATION ${cfg.source.publication} and run setup again`,
      );
    }
    if (!(pub.pubinsert && pub.pubupdate && pub.pubdelete && pub.pubtruncate)) {
      f.problems.push(
        `publication ${cfg.source.publication} does not publish every operation: ALTER PUBLICATION ${cfg.source.publication} SET (publish = 'insert, update, delete, truncate')`,
      );
    }
  } else {
    if (cfg.source.tables.length === 0 && !s.rolsuper) {
      f.problems.push(`creating a publication ${wanted} needs a superuser: run setup as a superuser, or configure source.tables (tables the role owns)`);
    } else if (!s.can_create) {
      f.problems.push('the role lacks CREATE on the database (needed for CREATE PUBLICATION): GRANT CREATE ON DATABASE <db> TO <role>');
    } else if (tableOids.length > 0) {
      const notOwned = await q<{ ident: string }>(
        `SELECT format('%I.%I', n.nspname, c.relname) AS ident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = ANY($1::oid[]) AND NOT pg_has_role(current_user, c.relowner, 'MEMBER')`,
        [tableOids],
      );
      for (const r of notOwned) f.problems.push(`the role does not own ${r.ident}: only the owner (or a superuser) can add it to a publication`);
    }
  }

  return Boolean(pub);
}

/** DDL capture: event triggers need a superuser (PostgreSQL docs: CREATE EVENT TRIGGER). */
async function checkDdlCapture(q: Query, s: ServerFacts, f: Findings): Promise<boolean> {
  const triggers = await q<{ evtname: string; evtenabled: string }>('SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname = ANY($1)', [
    EVENT_TRIGGERS,
  ]);
  const ddlCaptureInstalled = triggers.length === EVENT_TRIGGERS.length;
  for (const t of triggers)
    if (t.evtenabled === 'D')
      f.warnings.push(`event trigger ${t.evtname} is disabled: schema changes will not be captured; ALTER EVENT TRIGGER ${t.evtname} ENABLE`);
  if (!s.rolsuper) {
    f.warnings.push(
      ddlCaptureInstalled
        ? 'not a superuser: the DDL capture functions cannot be refreshed (the installed event triggers stay in place)'
        : 'the role cannot create event triggers (superuser only): schema changes (DDL) will NOT be captured, and a restore past a schema change will fail; run setup once as a superuser to install DDL capture',
    );
  }

  return ddlCaptureInstalled;
}

/**
 * What would break or be incomplete once published: unlogged tables (not captured), and tables
 * without a replica identity (their UPDATE and DELETE would fail). Returns the latter.
 */
async function checkPublishedTables(q: Query, cfg: Config, tableOids: number[], f: Findings): Promise<string[]> {
  const [scope, scopeParams] =
    cfg.source.tables.length > 0
      ? ['c.oid = ANY($1::oid[])', [tableOids]]
      : cfg.source.schemas.length > 0
        ? ['n.nspname = ANY($1::text[])', [cfg.source.schemas]]
        : ['true', []];
  const tables = await q<{ ident: string; relreplident: string; relpersistence: string; has_pk: boolean; has_ri: boolean }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS ident, c.relreplident::text, c.relpersistence::text,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS has_ri
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND c.relpersistence <> 't'
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'katya_cdp')
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
        AND ${scope}
      ORDER BY 1`,
    scopeParams,
  );
  const keyless: string[] = [];
  for (const t of tables) {
    if (t.relpersistence === 'u') {
      f.warnings.push(`table ${t.ident} is UNLOGGED: it writes no WAL, so its changes are not captured (ALTER TABLE ${t.ident} SET LOGGED to protect it)`);
      continue;
    }
    const noIdentity = t.relreplident === 'n' || (t.relreplident === 'd' && !t.has_pk) || (t.relreplident === 'i' && !t.has_ri);
    if (noIdentity) keyless.push(t.ident);
  }
  // A backup tool must never make the source's writes fail: publishing a table without a replica
  // identity does (its UPDATE and DELETE are refused from then on). Refused unless told what to do.
  if (keyless.length > 0) {
    if (cfg.source.keylessTables === 'full') {
      f.warnings.push(
        `setting REPLICA IDENTITY FULL on ${keyless.length} table(s) without a primary key or replica identity (${keyless.join(', ')}): their UPDATE and DELETE log whole old rows`,
      );
    } else {
      f.problems.push(
        `table(s) without a primary key or replica identity: ${keyless.join(', ')}; once published, their UPDATE and DELETE would FAIL on the source. ` +
          `Add a primary key (ALTER TABLE ... ADD PRIMARY KEY), or run setup with --replica-identity-full (source.keylessTables: full) to set REPLICA IDENTITY FULL on them, ` +
          `or leave them out (source.schemas / source.tables)`,
      );
    }
  }
  return keyless;
}

/** Large objects are not carried by logical decoding. */
async function checkLargeObjects(q: Query, f: Findings): Promise<void> {
  const [lo] = await q<{ n: number }>('SELECT count(*)::int AS n FROM pg_largeobject_metadata');
  if (lo && lo.n > 0) {
    f.warnings.push(
      `the database holds ${lo.n} large object(s): logical decoding does not carry large objects, so their changes are not captured (base backups include them)`,
    );
  }
}

async function createInSource(client: pg.Client, cfg: Config, s: SourceState, log: Logger): Promise<void> {
  try {
    await client.query('BEGIN');
    // Our own DDL must not be captured by the event trigger of an earlier setup.
    await client.query(`SELECT pg_catalog.set_config('katya_cdp.skip', 'on', true)`);
    if (!s.publicationExists) {
      const pub = `"${cfg.source.publication}"`;
      const what =
        cfg.source.tables.length > 0
          ? `FOR TABLE ${s.tableIdents.join(', ')}`
          : cfg.source.schemas.length > 0
            ? `FOR TABLES IN SCHEMA ${cfg.source.schemas.map((n) => `"${n.replace(/"/g, '""')}"`).join(', ')}`
            : 'FOR ALL TABLES';
      await client.query(`CREATE PUBLICATION ${pub} ${what} WITH (publish = 'insert, update, delete, truncate')`);
      log.info({ publication: cfg.source.publication, what }, 'setup: publication created');
    }
    if (cfg.source.keylessTables === 'full') {
      for (const t of s.keyless) await client.query(`ALTER TABLE ${t} REPLICA IDENTITY FULL`);
    }
    if (s.ddlCapturePossible) {
      await client.query(DDL_CAPTURE_SQL);
      await client.query(
        `INSERT INTO katya_cdp.config (key, value) VALUES ('publication', $1), ('newKeylessTables', $2)
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value WHERE katya_cdp.config.value IS DISTINCT FROM EXCLUDED.value`,
        [cfg.source.publication, cfg.source.newKeylessTables],
      );
      // The HMAC key of the DDL messages (ddl-capture.sql): made once, kept across setups (a new key
      // would make capture drop the messages still in the slot, signed with the old one).
      await client.query(`INSERT INTO katya_cdp.secret (id, ikey, okey) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING`, hmacPads(randomBytes(32)));
      if (!s.ddlCaptureInstalled) {
        for (const t of EVENT_TRIGGERS) await client.query(`DROP EVENT TRIGGER IF EXISTS ${t}`);
        for (const [name, event, fn] of EVENT_TRIGGER_DEFS) await client.query(`CREATE EVENT TRIGGER ${name} ON ${event} EXECUTE FUNCTION ${fn}`);
        log.info('setup: DDL capture installed (event triggers katya_cdp_*)');
      }
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw pgError('setup could not create the publication / DDL capture (nothing was changed)', err);
  }
}

// ---------------------------------------------------------------------------------------------
// Kafka

async function checkKafka(admin: Admin, cfg: Config, topic: string, f: Findings): Promise<KafkaState> {
  const topics = await admin.listTopics();
  if (!topics.includes(topic)) return { topicExists: false };
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  const n = meta.topics[0]?.partitions.length ?? 0;
  if (n !== cfg.kafka.partitions) {
    f.problems.push(
      `Kafka topic ${topic} exists with ${n} partitions, configured kafka.partitions is ${cfg.kafka.partitions}: set kafka.partitions to ${n} (or use another topic)`,
    );
  }
  return { topicExists: true };
}

async function createTopic(admin: Admin, cfg: Config, topic: string): Promise<void> {
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: [
        {
          topic,
          numPartitions: cfg.kafka.partitions,
          replicationFactor: cfg.kafka.replicationFactor,
          configEntries: [
            { name: 'retention.ms', value: String(cfg.kafka.retentionMs) },
            { name: 'cleanup.policy', value: 'delete' },
            { name: 'max.message.bytes', value: String(TOPIC_MAX_MESSAGE_BYTES) },
          ],
        },
      ],
    });
  } catch (err) {
    throw new CdpError(ErrorCodes.KAFKA, `cannot create Kafka topic ${topic}: ${toError(err).message}`, { cause: err });
  }
}

// ---------------------------------------------------------------------------------------------
// S3

async function checkArchive(store: Store, cfg: Config, topic: string, database: string, f: Findings): Promise<ArchiveState> {
  await checkBucket(store);
  const key = archiveManifestKey(archiveRoot(cfg));
  const body = await getObjectIfExists(store, key);
  if (!body) return { manifestExists: false };
  let m: ArchiveManifest;
  try {
    m = JSON.parse(body.toString('utf8')) as ArchiveManifest;
  } catch (err) {
    f.problems.push(`s3://${cfg.s3.bucket}/${key} is not valid JSON (${toError(err).message}): inspect it; the archive root may belong to something else`);
    return { manifestExists: true };
  }
  if (m.topic !== topic || m.partitions !== cfg.kafka.partitions || m.database !== database) {
    f.problems.push(
      `the archive at s3://${cfg.s3.bucket}/${archiveRoot(cfg)} was set up for topic ${m.topic} with ${m.partitions} partitions (database ${m.database}), not topic ${topic} with ${cfg.kafka.partitions}: use the same kafka.topic / kafka.partitions, or another s3.prefix`,
    );
  }
  return { manifestExists: true };
}

// ---------------------------------------------------------------------------------------------

function sameSet<T>(a: T[], b: T[]): boolean {
  const sa = new Set(a);
  return sa.size === new Set(b).size && b.every((x) => sa.has(x));
}

function describe(err: unknown): string {
  return toError(err).message;
}

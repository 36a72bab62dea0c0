// Smoke tests of the local stack (deploy/local/stack.sh): one per service, each proving the one
// capability the engine builds on, with the same client libraries the engine uses.
//   Postgres: logical decoding through pgoutput, read by pg-logical-replication.
//   Kafka:    topic admin, idempotent produce (acks=all), consumer-group consume + offset commit.
//   S3:       put / list / get byte-exact, and write-once via If-None-Match: * (G5).
// When one of these fails, the stack is broken, not the engine: read the stack logs first
// (`bash deploy/local/stack.sh status` names them).
// Every test works in its own scratch database / topic / key prefix (random suffix) and removes it.
import { randomBytes } from 'node:crypto';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import type { Pgoutput } from 'pg-logical-replication';
import { describe, expect, it } from 'vitest';

// The global setup exports these from `stack.sh env`; the defaults are the same values, so the
// file also runs with CDP_SKIP_STACK=1 against a stack started by hand.
const SOURCE_URL = process.env.CDP_SOURCE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const BROKERS = (process.env.CDP_KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const S3_ENDPOINT = process.env.CDP_S3_ENDPOINT ?? 'http://127.0.0.1:9000';
const S3_BUCKET = process.env.CDP_S3_BUCKET ?? 'katya-cdp';
const S3_PREFIX = process.env.CDP_S3_PREFIX ?? 'local';

const suffix = (): string => randomBytes(4).toString('hex');

/** Resolves with the first value `pick` returns, or rejects after `ms` with `what` in the message. */
function waitFor<T>(what: string, ms: number, register: (resolve: (v: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

function urlFor(database: string): string {
  const u = new URL(SOURCE_URL);
  u.pathname = `/${database}`;
  return u.toString();
}

describe('local stack smoke', () => {
  it('postgres: a committed insert is decoded from a pgoutput slot', async () => {
    const db = `cdp_smoke_${suffix()}`;
    const slot = `${db}_slot`;
    const pub = `${db}_pub`;
    const admin = new pg.Client({ connectionString: SOURCE_URL });
    await admin.connect();
    let scratch: pg.Client | undefined;
    let service: LogicalReplicationService | undefined;
    let subscription: Promise<unknown> | undefined;
    try {
      const level = (await admin.query<{ wal_level: string }>('SHOW wal_level')).rows[0]?.wal_level;
      expect(level, 'wal_level must be logical: run bash deploy/local/stack.sh up').toBe('logical');
      await admin.query(`CREATE DATABASE ${db}`);
      scratch = new pg.Client({ connectionString: urlFor(db) });
      await scratch.connect();
      await scratch.query('CREATE TABLE smoke (id int PRIMARY KEY, name text NOT NULL, amount numeric, note text)');
      await scratch.query(`CREATE PUBLICATION ${pub} FOR TABLE smoke`);
      // The slot exists before the insert, so the insert is after its consistent point.
      await scratch.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);

      service = new LogicalReplicationService({ connectionString: urlFor(db) }, { acknowledge: { auto: true, timeoutSeconds: 0 } });
      const svc = service;
      const inserted = waitFor<Pgoutput.MessageInsert>('the decoded insert', 60_000, (resolve) => {
        svc.on('data', (_lsn: string, msg: Pgoutput.Message) => {
          if (msg.tag === 'insert' && msg.relation.name === 'smoke') resolve(msg);
        });
      });
      const errors: Error[] = [];
      svc.on('error', (err: Error) => errors.push(err));
      subscription = svc.subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: [pub] }), slot).catch((err: unknown) => errors.push(err as Error));

      await scratch.query('BEGIN');
      await scratch.query(`INSERT INTO smoke VALUES (42, 'Katya', 12345.678901234567890, NULL)`);
      await scratch.query('COMMIT');

      const msg = await inserted;
      expect(errors).toEqual([]);
      expect(msg.relation.schema).toBe('public');
      expect(msg.relation.columns.map((c) => c.name)).toEqual(['id', 'name', 'amount', 'note']);
      expect(msg.new.id).toBe(42);
      expect(msg.new.name).toBe('Katya');
      // numeric must arrive exactly (the library keeps it as text; compare as text either way).
      expect(String(msg.new.amount)).toBe('12345.678901234567890');
      expect(msg.new.note).toBeNull();
    } finally {
      await service?.stop().catch(() => undefined);
      await subscription;
      await scratch?.end().catch(() => undefined);
      // The walsender of the stopped stream may need a moment to release the slot.
      for (let i = 0; i < 50; i++) {
        const r = await admin.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
        if (r.rows.length === 0) break;
        if (!r.rows[0]!.active) {
          await admin.query('SELECT pg_drop_replication_slot($1)', [slot]);
          break;
        }
        await new Promise((res) => setTimeout(res, 200));
      }
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      const leftovers = await admin.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot]);
      await admin.end();
      expect(leftovers.rows, `slot ${slot} must be dropped (a leftover slot pins WAL forever)`).toEqual([]);
    }
  });

  it('kafka: idempotent produce and consumer-group consume with committed offsets', async () => {
    const topic = `cdp-smoke-${suffix()}`;
    const groupId = `${topic}-group`;
    const kafka = new Kafka({ clientId: 'cdp-smoke', brokers: BROKERS, logLevel: logLevel.WARN });
    const admin = kafka.admin();
    const producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    // A short fetch wait: disconnect() waits for the in-flight long poll (5 s by default).
    const consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 1_000, maxWaitTimeInMs: 250 });
    await admin.connect();
    try {
      const created = await admin.createTopics({
        topics: [{ topic, numPartitions: 3, replicationFactor: 1 }],
        waitForLeaders: true,
      });
      expect(created).toBe(true);
      const meta = await admin.fetchTopicMetadata({ topics: [topic] });
      expect(meta.topics[0]!.partitions).toHaveLength(3);

      await producer.connect();
      const key = `key-${suffix()}`;
      const value = `value-${suffix()} ünïcødé`;
      const [ack] = await producer.send({ topic, acks: -1, messages: [{ key, value }] });
      expect(ack!.errorCode).toBe(0);

      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      const received = waitFor<{ key: string; value: string; partition: number; offset: string }>(
        'the record through the consumer group',
        60_000,
        (resolve) => {
          void consumer.run({
            autoCommit: false,
            eachMessage: async ({ partition, message }) => {
              const next = (BigInt(message.offset) + 1n).toString();
              await consumer.commitOffsets([{ topic, partition, offset: next }]);
              resolve({
                key: message.key!.toString(),
                value: message.value!.toString(),
                partition,
                offset: message.offset,
              });
            },
          });
        },
      );
      const got = await received;
      expect(got.key).toBe(key);
      expect(got.value).toBe(value);
      expect(got.partition).toBe(ack!.partition);

      const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
      const p = committed[0]!.partitions.find((x) => x.partition === got.partition);
      expect(p?.offset).toBe((BigInt(got.offset) + 1n).toString());
    } finally {
      await consumer.disconnect().catch(() => undefined);
      await producer.disconnect().catch(() => undefined);
      await admin.deleteGroups([groupId]).catch(() => undefined);
      await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
      const left = await admin.listTopics();
      await admin.disconnect();
      expect(left).not.toContain(topic);
    }
  });

  it('s3: put, list, byte-exact get, and If-None-Match: * refuses to overwrite', async () => {
    const s3 = new S3Client({
      endpoint: S3_ENDPOINT,
      region: process.env.AWS_REGION ?? 'us-east-1',
      forcePathStyle: (process.env.CDP_S3_FORCE_PATH_STYLE ?? 'true') === 'true',
      credentials: {
        accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'cdp-local',
        secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'cdp-local-secret',
      },
    });
    const prefix = `${S3_PREFIX}/smoke-${suffix()}/`;
    const body = randomBytes(64 * 1024);
    try {
      await s3.send(new PutObjectCommand({ Bucket: S3_BUCKET, Key: `${prefix}a.bin`, Body: body }));
      await s3.send(new PutObjectCommand({ Bucket: S3_BUCKET, Key: `${prefix}b.txt`, Body: 'hello' }));

      const listed = await s3.send(new ListObjectsV2Command({ Bucket: S3_BUCKET, Prefix: prefix }));
      expect((listed.Contents ?? []).map((o) => o.Key)).toEqual([`${prefix}a.bin`, `${prefix}b.txt`]);

      const got = await s3.send(new GetObjectCommand({ Bucket: S3_BUCKET, Key: `${prefix}a.bin` }));
      expect(Buffer.from(await got.Body!.transformToByteArray()).equals(body)).toBe(true);

      // Write-once (G5): a second writer of an existing key must be refused, not win silently.
      const overwrite = s3.send(new PutObjectCommand({ Bucket: S3_BUCKET, Key: `${prefix}a.bin`, Body: 'other bytes', IfNoneMatch: '*' }));
      const err = (await overwrite.then(
        () => undefined,
        (e: unknown) => e,
      )) as { name?: string; $metadata?: { httpStatusCode?: number } } | undefined;
      expect(err, 'conditional put on an existing key was accepted').toBeDefined();
      expect(err!.$metadata?.httpStatusCode).toBe(412);
      expect(err!.name).toBe('PreconditionFailed');

      const again = await s3.send(new GetObjectCommand({ Bucket: S3_BUCKET, Key: `${prefix}a.bin` }));
      expect(Buffer.from(await again.Body!.transformToByteArray()).equals(body)).toBe(true);

      // ...while the same conditional put of a new key goes through.
      await s3.send(new PutObjectCommand({ Bucket: S3_BUCKET, Key: `${prefix}c.bin`, Body: 'first', IfNoneMatch: '*' }));
    } finally {
      const listed = await s3.send(new ListObjectsV2Command({ Bucket: S3_BUCKET, Prefix: prefix }));
      const keys = (listed.Contents ?? []).map((o) => ({ Key: o.Key! }));
      if (keys.length > 0) {
        await s3.send(new DeleteObjectsCommand({ Bucket: S3_BUCKET, Delete: { Objects: keys } }));
      }
      const after = await s3.send(new ListObjectsV2Command({ Bucket: S3_BUCKET, Prefix: prefix }));
      s3.destroy();
      expect(after.KeyCount ?? 0).toBe(0);
    }
  });
});

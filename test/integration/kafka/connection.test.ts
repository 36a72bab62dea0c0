import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { KafkaConnection, type ConnectionOptions } from '../../../src/kafka/connection.js';
import { Metadata } from '../../../src/kafka/protocol/metadata.js';
import { CdpError } from '../../../src/errors.js';
import { stackEnv } from '../../support/stack.js';

// src/kafka/connection.ts against the local broker's three listeners (deploy/local/stack.sh):
// PLAINTEXT 9092, SASL_SSL 9094 (every mechanism the engine offers), SSL with a client certificate
// required 9095. Each connection negotiates, authenticates, then asks for metadata, whose broker
// address is the listener it came through.

const env = stackEnv();
const hostPort = (addr: string) => [addr.split(':')[0]!, Number(addr.split(':')[1])] as const;
const ready = Boolean(env.CDP_STACK_KAFKA_SASL_SSL_BROKERS && env.CDP_STACK_KAFKA_CA_FILE);

async function metadataVia(addr: string, extra: Partial<ConnectionOptions>) {
  const [h, p] = hostPort(addr);
  const conn = await KafkaConnection.open({ host: h, port: p, clientId: 'cdp-test', connectTimeoutMs: 10_000, requestTimeoutMs: 10_000, ...extra });
  try {
    return await conn.send(Metadata, { topics: [], allowAutoTopicCreation: false });
  } finally {
    conn.close();
  }
}

describe.skipIf(!ready)('Kafka connections to the local broker', () => {
  const ca = () => readFileSync(env.CDP_STACK_KAFKA_CA_FILE!);
  const password = () => readFileSync(env.CDP_STACK_KAFKA_SASL_PASSWORD_FILE!, 'utf8').trim();
  const sasl = env.CDP_STACK_KAFKA_SASL_SSL_BROKERS!;
  const mtls = env.CDP_STACK_KAFKA_MTLS_BROKERS!;

  it('PLAINTEXT: no TLS, no SASL', async () => {
    const m = await metadataVia(env.CDP_KAFKA_BROKERS!.split(',')[0]!, {});
    expect(m.brokers[0]?.port).toBe(Number(env.CDP_KAFKA_BROKERS!.split(':')[1]));
  });

  for (const mechanism of ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'] as const) {
    it(`SASL_SSL with ${mechanism}`, async () => {
      const m = await metadataVia(sasl, { tls: { ca: ca() }, sasl: { mechanism, username: env.CDP_STACK_KAFKA_SASL_USERNAME!, password: password() } });
      expect(m.brokers.map((b) => `${b.host}:${b.port}`)).toEqual([sasl]);
    });
  }

  it('mutual TLS with the stack client certificate', async () => {
    const m = await metadataVia(mtls, {
      tls: { ca: ca(), cert: readFileSync(env.CDP_STACK_KAFKA_CLIENT_CERT_FILE!), key: readFileSync(env.CDP_STACK_KAFKA_CLIENT_KEY_FILE!) },
    });
    expect(m.brokers.map((b) => `${b.host}:${b.port}`)).toEqual([mtls]);
  });

  it('refusals are not retryable and say what to check', async () => {
    const cases: Array<[Partial<ConnectionOptions>, string, RegExp]> = [
      [
        { tls: { ca: ca() }, sasl: { mechanism: 'SCRAM-SHA-512', username: 'cdp', password: 'wrong' } },
        sasl,
        /SASL authentication failed .*kafka\.sasl\.username/,
      ],
      [{ tls: { ca: ca() }, sasl: { mechanism: 'SCRAM-SHA-256', username: 'nobody', password: 'x' } }, sasl, /SASL authentication failed/],
      [{ tls: {}, sasl: { mechanism: 'PLAIN', username: 'cdp', password: password() } }, sasl, /not trusted.*kafka\.tls\.caFile/],
      [{ tls: { ca: ca() } }, mtls, /client certificate.*kafka\.tls\.certFile/],
    ];
    for (const [opts, addr, says] of cases) {
      const err = await metadataVia(addr, opts).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, String(says)).toBeInstanceOf(CdpError);
      expect((err as CdpError).canRetry, (err as Error).message).toBe(false);
      expect((err as Error).message).toMatch(says);
    }
  });
});

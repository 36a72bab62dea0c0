import { readFileSync } from 'node:fs';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import type { KafkaConfig, SASLOptions } from 'kafkajs';
import type { Config } from '../config/config.js';
import { ConfigError } from '../errors.js';
import type { ConnectionOptions } from './connection.js';
import type { SaslCredentials } from './sasl.js';

// Secured Kafka (README "Secured Kafka"): the configuration's kafka.tls and kafka.sasl turned into
// what each client needs: node:tls options and SASL credentials for the engine's own connections
// (producer.ts, the start-up probe), `ssl` / `sasl` for kafkajs (consumer group and admin; kafkajs
// docs, "Client Configuration" > SSL, SASL). Files and the password are read here, when a client
// is built, never stored in the configuration object and never logged: the configuration holds
// only where they are (a file path, or the NAME of an environment variable).

export interface KafkaSecurity {
  tls?: TlsOptions;
  sasl?: SaslCredentials;
}

/** What a direct (non-kafkajs) client needs: the bootstrap brokers and the options of each connection. */
export interface KafkaClientOptions {
  brokers: string[];
  connection: Omit<ConnectionOptions, 'host' | 'port'>;
}

function readFile(path: string, field: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`cannot read the ${what} ${path}: ${(err as Error).message}`, field, { cause: err });
  }
}

/** A secret from a file (trailing newline dropped) or from the environment variable named. */
function secret(file: string | undefined, env: string | undefined, fileField: string, envField: string, what: string): string | undefined {
  if (file !== undefined)
    return readFile(file, fileField, what)
      .toString('utf8')
      .replace(/\r?\n$/, '');
  if (env !== undefined) {
    const v = process.env[env];
    if (v === undefined || v === '') throw new ConfigError(`the environment variable ${env} (holding the ${what}) is not set`, envField);
    return v;
  }
  return undefined;
}

/** True when the configuration asks for TLS to Kafka (explicitly, or by naming a certificate file). */
export function kafkaTlsEnabled(cfg: Config): boolean {
  const t = cfg.kafka.tls;
  return t.enabled ?? (t.caFile !== undefined || t.certFile !== undefined || t.keyFile !== undefined);
}

export function kafkaSecurity(cfg: Config): KafkaSecurity {
  const out: KafkaSecurity = {};
  const t = cfg.kafka.tls;
  if (kafkaTlsEnabled(cfg)) {
    const tls: TlsOptions = { rejectUnauthorized: true };
    // A custom CA replaces Node's bundled roots (a private CA); without one the public roots apply.
    if (t.caFile) tls.ca = readFile(t.caFile, 'kafka.tls.caFile', 'Kafka CA certificate file');
    if (t.certFile) tls.cert = readFile(t.certFile, 'kafka.tls.certFile', 'Kafka client certificate file');
    if (t.keyFile) tls.key = readFile(t.keyFile, 'kafka.tls.keyFile', 'Kafka client key file');
    const passphrase = secret(t.keyPasswordFile, t.keyPasswordEnv, 'kafka.tls.keyPasswordFile', 'kafka.tls.keyPasswordEnv', 'Kafka client key password');
    if (passphrase !== undefined) tls.passphrase = passphrase;
    if (t.serverName) tls.servername = t.serverName;
    out.tls = tls;
  }
  const s = cfg.kafka.sasl;
  if (s) {
    const password = secret(s.passwordFile, s.passwordEnv, 'kafka.sasl.passwordFile', 'kafka.sasl.passwordEnv', 'Kafka SASL password');
    out.sasl = { mechanism: s.mechanism, username: s.username, password: password ?? '' };
  }
  return out;
}

export function kafkaClientOptions(cfg: Config, clientSuffix = ''): KafkaClientOptions {
  const sec = kafkaSecurity(cfg);
  return {
    brokers: cfg.kafka.brokers,
    connection: {
      clientId: `${cfg.kafka.clientId}${clientSuffix ? '-' + clientSuffix : ''}`,
      ...(sec.tls ? { tls: sec.tls } : {}),
      ...(sec.sasl ? { sasl: sec.sasl } : {}),
      connectTimeoutMs: 5_000,
      requestTimeoutMs: 30_000,
    },
  };
}

/** kafkajs's `ssl` and `sasl` options for the same settings. */
export function kafkajsSecurity(cfg: Config): Pick<KafkaConfig, 'ssl' | 'sasl'> {
  const sec = kafkaSecurity(cfg);
  const out: Pick<KafkaConfig, 'ssl' | 'sasl'> = {};
  if (sec.tls) out.ssl = sec.tls;
  if (sec.sasl) {
    const { username, password } = sec.sasl;
    const mechanism = sec.sasl.mechanism.toLowerCase() as 'plain' | 'scram-sha-256' | 'scram-sha-512';
    out.sasl = { mechanism, username, password } as SASLOptions;
  }
  return out;
}

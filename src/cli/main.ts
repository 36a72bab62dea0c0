import { setMaxListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { loadConfig, redactedConfig, splitList } from '../config/config.js';
import { CdpError, ErrorCodes, ExitCode, toError } from '../errors.js';
import { createLogger } from '../util/log.js';
import { parseTestFaults } from '../testing/faults.js';
import type { CommandContext } from '../context.js';
import { COMMANDS, type ActionFactory } from './commands.js';

// A thin CLI over the library: parse, load configuration once, call one function, print its result
// and map its outcome to the exit codes of docs/DESIGN.md section 6.

/** Flags shared by every command, and the configuration path each one sets. */
const COMMON_FLAGS: Array<[flag: string, path: string, help: string, parse?: (v: string) => unknown]> = [
  ['--source-url <url>', 'source.url', 'source database URL (CDP_SOURCE_URL)'],
  ['--kafka-brokers <list>', 'kafka.brokers', 'comma-separated host:port (CDP_KAFKA_BROKERS)', splitList],
  ['--topic <name>', 'kafka.topic', 'Kafka topic (CDP_TOPIC; default cdp.<database>)'],
  ['--kafka-tls', 'kafka.tls.enabled', 'TLS to Kafka with the system CAs (CDP_KAFKA_TLS; implied by the --kafka-tls-* files)'],
  ['--kafka-tls-ca-file <file>', 'kafka.tls.caFile', 'CA certificate of the Kafka brokers (CDP_KAFKA_TLS_CA_FILE)'],
  ['--kafka-tls-cert-file <file>', 'kafka.tls.certFile', 'client certificate for mutual TLS (CDP_KAFKA_TLS_CERT_FILE)'],
  ['--kafka-tls-key-file <file>', 'kafka.tls.keyFile', 'client key for mutual TLS (CDP_KAFKA_TLS_KEY_FILE)'],
  ['--kafka-sasl-mechanism <name>', 'kafka.sasl.mechanism', 'PLAIN|SCRAM-SHA-256|SCRAM-SHA-512 (CDP_KAFKA_SASL_MECHANISM)'],
  ['--kafka-sasl-username <name>', 'kafka.sasl.username', 'SASL user (CDP_KAFKA_SASL_USERNAME)'],
  [
    '--kafka-sasl-password-file <file>',
    'kafka.sasl.passwordFile',
    'file holding the SASL password (CDP_KAFKA_SASL_PASSWORD_FILE; or CDP_KAFKA_SASL_PASSWORD_ENV=<variable name>)',
  ],
  ['--s3-endpoint <url>', 's3.endpoint', 'S3 endpoint URL (CDP_S3_ENDPOINT)'],
  ['--s3-bucket <name>', 's3.bucket', 'S3 bucket (CDP_S3_BUCKET)'],
  ['--s3-prefix <prefix>', 's3.prefix', 'key prefix inside the bucket (CDP_S3_PREFIX)'],
  ['--source-sslmode <mode>', 'source.tls.mode', 'disable|require|verify-ca|verify-full for the source (CDP_SOURCE_SSLMODE)'],
  ['--source-sslrootcert <file>', 'source.tls.rootCertFile', 'CA certificate the source server certificate must chain to (CDP_SOURCE_SSLROOTCERT)'],
  ['--source-sslcert <file>', 'source.tls.certFile', 'client certificate for the source (CDP_SOURCE_SSLCERT)'],
  [
    '--source-sslkey <file>',
    'source.tls.keyFile',
    "client key for the source; an encrypted key's password comes from source.tls.keyPasswordFile / CDP_SOURCE_SSLKEY_PASSWORD_FILE (CDP_SOURCE_SSLKEY)",
  ],
  ['--target-sslmode <mode>', 'restore.tls.mode', 'TLS mode for the restore target, --into (CDP_TARGET_SSLMODE)'],
  ['--target-sslrootcert <file>', 'restore.tls.rootCertFile', 'CA certificate for the restore target (CDP_TARGET_SSLROOTCERT)'],
  ['--target-sslcert <file>', 'restore.tls.certFile', 'client certificate for the restore target (CDP_TARGET_SSLCERT)'],
  ['--target-sslkey <file>', 'restore.tls.keyFile', 'client key for the restore target (CDP_TARGET_SSLKEY)'],
  ['--slot <name>', 'source.slot', 'replication slot name (CDP_SLOT)'],
  ['--publication <name>', 'source.publication', 'publication name (CDP_PUBLICATION)'],
  ['--log-level <level>', 'log.level', 'fatal|error|warn|info|debug|trace|silent (CDP_LOG_LEVEL)'],
];

const FLAG_KEY = (flag: string) =>
  flag
    .replace(/^--/, '')
    .split(' ')[0]!
    .replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

function contextFrom(cmd: Command, signal: AbortSignal): CommandContext {
  const opts = cmd.optsWithGlobals() as Record<string, unknown>;
  const flags: Record<string, unknown> = {};
  for (const [flag, path] of COMMON_FLAGS) flags[path] = opts[FLAG_KEY(flag)];
  const cfg = loadConfig({ file: opts.config as string | undefined, env: process.env, flags });
  // Test-only hooks are refused at start-up outside the test suite (exit 2), not when first reached.
  parseTestFaults(process.env);
  const log = createLogger(cfg.log.level, cfg.log.format);
  log.debug({ config: redactedConfig(cfg) }, 'configuration');
  return { cfg, log, signal };
}

/** The version of package.json (`cdp --version`). */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

export function buildProgram(signal: AbortSignal, onExit: (code: number) => void): Command {
  const program = new Command('cdp')
    .description('Katya CDP: continuous data protection for PostgreSQL (WAL -> Kafka -> S3 -> point-in-time restore)')
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('-c, --config <file>', 'configuration file, YAML or JSON')
    .showHelpAfterError('(run cdp --help for usage)')
    // Subcommand help lists the global flags too (issue 14), followed by helpFooter().
    .configureHelp({ showGlobalOptions: true })
    .exitOverride();
  for (const [flag, , help, parse] of COMMON_FLAGS) {
    const o = new Option(flag, help);
    if (parse) o.argParser(parse);
    program.addOption(o);
  }

  // `needs`: the components probed at start-up (src/ops/preflight.ts): refused or rejected is exit 2.
  const action: ActionFactory =
    (fn, needs = []) =>
    async (opts, cmd) => {
      const ctx = contextFrom(cmd, signal);
      if (needs.length > 0) await (await import('../ops/preflight.js')).preflight(ctx.cfg, needs);
      const code = await fn(ctx, opts);
      onExit(code ?? ExitCode.ok);
    };
  for (const register of COMMANDS) register(program, action);

  for (const cmd of program.commands) cmd.addHelpText('after', helpFooter(cmd.name()));
  program.addHelpText('after', helpFooter(''));
  return program;
}

/** Examples per command for `cdp <command> --help` (issue 14). */
const EXAMPLES: Record<string, string[]> = {
  '': ['cdp --config /etc/cdp/cdp.yaml status', 'cdp <command> --help'],
  setup: ['cdp setup', 'cdp setup --replica-identity-full --no-basebackup'],
  capture: ['CDP_SOURCE_URL=postgres://cdp@db/shop cdp capture'],
  archive: ['CDP_METRICS_PORT=9465 cdp archive'],
  run: ['cdp --config /etc/cdp/cdp.yaml run'],
  basebackup: ['cdp basebackup'],
  compact: ['cdp compact --dry-run'],
  restore: [
    "cdp restore --into postgres://postgres@restore-host/shop --time '2026-03-01T12:00:00Z'",
    'cdp restore --into postgres://postgres@restore-host/shop --latest --tables public.orders',
    'cdp restore --into postgres://postgres@restore-host/shop --xid 81234 --dry-run',
  ],
  status: ['cdp status', 'cdp status --check --json'],
  info: ['cdp info', 'cdp info --json'],
  verify: ['cdp verify', 'cdp verify --deep'],
  prune: ['cdp prune --dry-run'],
  replicate: ['cdp replicate --to-bucket katya-cdp-offsite --to-endpoint https://s3.other-region.example'],
};

/** The part of every help text that says how to configure, what the exit codes mean, and examples. */
export function helpFooter(command: string): string {
  const examples = EXAMPLES[command] ?? [];
  return [
    '',
    'Configuration: defaults < --config file < CDP_* environment < flags. Every flag above names its',
    'variable; the full list is in README.md (Configuration) and deploy/cdp.example.yaml. Secrets come',
    'from files or variables, never flags: PGPASSWORD or ~/.pgpass, AWS_ACCESS_KEY_ID and',
    'AWS_SECRET_ACCESS_KEY (or an AWS profile), CDP_SOURCE_SSLKEY_PASSWORD_FILE, CDP_KAFKA_SASL_PASSWORD_FILE,',
    'CDP_ENCRYPTION_KEY_FILE. CDP_LOG_FORMAT=json for JSON logs on a terminal; CDP_DEBUG=1 adds causes to errors.',
    '',
    'Exit codes: 0 done (or stopped by SIGTERM) | 1 failed, retrying later may help (a component',
    'unreachable, a daemon stalled) | 2 usage or configuration: fix the command, the settings, the',
    'address or credentials | 3 integrity: a gap or a checksum mismatch in the archive | 4 status --check:',
    'RPO or RTO objective missed.',
    ...(examples.length ? ['', 'Examples:', ...examples.map((e) => `  ${e}`)] : []),
  ].join('\n');
}

export async function main(argv: string[]): Promise<void> {
  const controller = new AbortController();
  // Every in-flight S3 call, retry sleep and child process of a command listens on this signal;
  // restore reads up to 8 segments at once per scan, and --xid runs a second scan beside the
  // replay, past Node's default of 10 listeners (MaxListenersExceededWarning, issue 14). The
  // listeners are removed as the calls end: a bound, not a leak.
  setMaxListeners(200, controller.signal);
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals += 1;
    if (signals === 1) {
      process.stderr.write(`cdp: ${sig} received, stopping cleanly (send again to force)\n`);
      controller.abort(new CdpError(ErrorCodes.SHUTDOWN, `stopped by ${sig}`));
      // Graceful stop is bounded: if something hangs, leave anyway (nothing is acknowledged early,
      // so a forced exit loses nothing; the next start resumes from the slot and the offsets).
      setTimeout(() => {
        process.stderr.write('cdp: graceful stop timed out after 60 s, exiting\n');
        process.exit(ExitCode.failure);
      }, 60_000).unref();
    } else {
      process.stderr.write('cdp: forced exit\n');
      process.exit(130);
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });

  let exitCode: number = ExitCode.ok;
  const program = buildProgram(controller.signal, (c) => (exitCode = c));
  try {
    await program.parseAsync(argv);
  } catch (raw) {
    exitCode = report(raw);
  }
  process.exitCode = exitCode;
  // Daemons may leave sockets half-closed by client libraries; do not hang after the work is done.
  setTimeout(() => process.exit(exitCode), 2_000).unref();
}

function report(raw: unknown): number {
  if (raw instanceof CommanderError) {
    if (raw.code === 'commander.helpDisplayed' || raw.code === 'commander.version' || raw.code === 'commander.help') return ExitCode.ok;
    // Commander already printed its one-line message.
    return ExitCode.usage;
  }
  const err = toError(raw);
  if (err instanceof CdpError) {
    if (err.code === ErrorCodes.SHUTDOWN) return ExitCode.ok;
    process.stderr.write(`cdp: error: ${err.message}\n`);
    if (process.env.CDP_DEBUG && err.cause) process.stderr.write(`${toError(err.cause).stack}\n`);
    return err.exitCode;
  }
  process.stderr.write(`cdp: unexpected error: ${err.stack ?? err.message}\n`);
  return ExitCode.failure;
}

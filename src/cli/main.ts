import { setMaxListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { loadConfig, redactedConfig } from '../config/config.js';
import { CdpError, ErrorCodes, ExitCode, toError } from '../errors.js';
import { createLogger } from '../util/log.js';
import { parseTestFaults } from '../testing/faults.js';
import type { CommandContext } from '../context.js';
import type { Component } from '../ops/preflight.js';
import { printJson, printSetupRefused, restoreDisplay } from './output.js';

// A thin CLI over the library: parse, load configuration once, call one function, print its result
// and map its outcome to the exit codes of docs/DESIGN.md section 6.

/** Flags shared by every command, and the configuration path each one sets. */
const COMMON_FLAGS: Array<[flag: string, path: string, help: string, parse?: (v: string) => unknown]> = [
  ['--source-url <url>', 'source.url', 'source database URL (CDP_SOURCE_URL)'],
  [
    '--kafka-brokers <list>',
    'kafka.brokers',
    'comma-separated host:port (CDP_KAFKA_BROKERS)',
    (v) =>
      v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
  ],
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

function parseInteger(name: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v)) throw new CdpError(ErrorCodes.USAGE, `${name}: expected a whole number, got ${JSON.stringify(v)}`);
    return Number(v);
  };
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
  const action =
    (fn: (ctx: CommandContext, opts: Record<string, unknown>) => Promise<number | void>, needs: Component[] = []) =>
    async (opts: Record<string, unknown>, cmd: Command) => {
      const ctx = contextFrom(cmd, signal);
      if (needs.length > 0) await (await import('../ops/preflight.js')).preflight(ctx.cfg, needs);
      const code = await fn(ctx, opts);
      onExit(code ?? ExitCode.ok);
    };

  program
    .command('setup')
    .description('create or check publication, slot, DDL capture, topic and bucket (idempotent); takes the first base backup')
    .option('--no-basebackup', 'do not take the first base backup')
    .option('--replica-identity-full', 'set REPLICA IDENTITY FULL on published tables without a primary key (source.keylessTables: full) instead of refusing')
    .action(
      action(async (ctx, o) => {
        const { SetupRefused } = await import('../capture/setup.js');
        try {
          await (await import('../ops/setup.js')).runSetup(ctx, { basebackup: o.basebackup !== false, replicaIdentityFull: Boolean(o.replicaIdentityFull) });
        } catch (err) {
          if (!(err instanceof SetupRefused)) throw err;
          printSetupRefused(err.problems);
          return err.exitCode;
        }
      }),
    );

  program
    .command('capture')
    .description('stream the replication slot into Kafka (daemon)')
    .action(action(async (ctx) => (await import('../ops/run.js')).runCapture(ctx), ['source', 'kafka']));

  program
    .command('archive')
    .description('consume Kafka and write segments to S3 (daemon; run several for scale)')
    .action(action(async (ctx) => (await import('../ops/run.js')).runArchive(ctx), ['kafka', 's3']));

  program
    .command('run')
    .description('capture + archive + the base-backup schedule in one process')
    .action(action(async (ctx) => (await import('../ops/run.js')).runAll(ctx), ['source', 'kafka', 's3']));

  program
    .command('basebackup')
    .description('take a consistent base backup (pg_dump at an exported snapshot) to S3')
    .action(
      action(
        async (ctx) => {
          await (await import('../base/basebackup.js')).takeBaseBackup(ctx);
          return ExitCode.ok;
        },
        ['source', 's3'],
      ),
    );

  program
    .command('compact')
    .description('build a synthetic base at the restorable point from the newest base and the archived changes, off the source (scratch PostgreSQL)')
    .option('--dry-run', 'print what would be compacted; start nothing, write nothing')
    .action(
      action(
        async (ctx, o) => {
          printJson(await (await import('../compact/compact.js')).compact(ctx, { dryRun: Boolean(o.dryRun) }));
          return ExitCode.ok;
        },
        ['s3'],
      ),
    );

  program
    .command('restore')
    .description('restore into a database at a time, LSN, transaction, or the restorable point')
    .requiredOption('--into <url>', 'target database URL')
    .option('--time <timestamp>', 'transactions committed at or before this time (ISO 8601 with zone)')
    .option('--lsn <lsn>', 'transactions with commit LSN at or before this LSN (e.g. 0/16B3748)')
    .option('--xid <xid>', 'up to and including this transaction', parseInteger('--xid'))
    .option('--latest', 'the restorable point')
    .option('--tables <list>', 'only these tables (schema.table or table, comma-separated)')
    .option('--dry-run', 'print the plan; write nothing')
    .option('--sql <file>', 'write the replay as SQL to this file instead of applying it')
    .option('--force', 'restore into a non-empty database')
    .option('--jobs <n>', 'pg_restore parallel jobs', parseInteger('--jobs'))
    .option(
      '--ddl-override <file>',
      'JSON {"<commit LSN>#<position>": "<SQL>"}: SQL to run in place of DDL events restore cannot replay exactly (named in its error)',
    )
    .option('--ddl-role <role>', 'replay DDL as this role instead of the role that ran it on the source')
    .option(
      '--trust-legacy-ddl',
      'replay DDL captured by an earlier cdp (no role recorded) as the restore role: only if every role that could run DDL on the source then is trusted',
    )
    .action(
      action(async (ctx, o) => {
        (await import('../restore/target.js')).checkOneTarget({
          time: o.time as string | undefined,
          lsn: o.lsn as string | undefined,
          xid: o.xid as number | undefined,
          latest: Boolean(o.latest),
        });
        if (o.dryRun && o.sql) throw new CdpError(ErrorCodes.USAGE, '--dry-run and --sql contradict each other: choose one');
        // After the flags are checked: a usage error is reported whatever the state of S3.
        await (await import('../ops/preflight.js')).preflight(ctx.cfg, ['s3']);
        const report = await (
          await import('../restore/restore.js')
        ).runRestore(
          ctx,
          {
            into: String(o.into),
            time: o.time as string | undefined,
            lsn: o.lsn as string | undefined,
            xid: o.xid as number | undefined,
            latest: Boolean(o.latest),
            tables: o.tables
              ? String(o.tables)
                  .split(',')
                  .map((s) => s.trim())
                  .filter(Boolean)
              : undefined,
            dryRun: Boolean(o.dryRun),
            sqlFile: o.sql as string | undefined,
            force: Boolean(o.force),
            jobs: o.jobs as number | undefined,
            ddlOverride: o.ddlOverride as string | undefined,
            ddlRole: o.ddlRole as string | undefined,
            trustLegacyDdl: Boolean(o.trustLegacyDdl),
          },
          restoreDisplay(),
        );
        printJson(report);
      }),
    );

  program
    .command('status')
    .description('restorable point, RPO, slot lag, consumer lag, bases')
    .option('--json', 'print JSON')
    .option('--check', 'exit 4 when the RPO objective is breached')
    .action(
      action(async (ctx, o) => {
        const report = await (await import('../ops/status.js')).gatherStatus(ctx);
        return (await import('./status.js')).reportStatus(report, { json: Boolean(o.json), check: Boolean(o.check) });
      }),
    );

  program
    .command('info')
    .description(
      'where you stand, from the archive alone: earliest and latest restorable point, every base (source or synthetic) with size and restorable range, segments and bytes per partition, breaks',
    )
    .option('--json', 'print JSON')
    .action(
      action(
        async (ctx, o) => {
          const report = await (await import('../ops/info.js')).gatherInfo(ctx);
          (await import('./info.js')).printInfo(report, { json: Boolean(o.json) });
        },
        ['s3'],
      ),
    );

  program
    .command('verify')
    .description('check checksums and continuity of the archive')
    .option('--deep', 'also test-restore into a scratch database')
    .action(
      action(
        async (ctx, o) => {
          const report = await (await import('../ops/verify.js')).runVerify(ctx, { deep: Boolean(o.deep) });
          printJson(report, 2);
          return report.ok ? ExitCode.ok : ExitCode.integrity;
        },
        ['s3'],
      ),
    );

  program
    .command('prune')
    .description('retention: delete the bases and segments that no point of the last retention.days needs (one window; every point inside it stays restorable)')
    .option('--dry-run', 'print what would be deleted')
    .action(action(async (ctx, o) => printJson(await (await import('../ops/prune.js')).pruneArchive(ctx, { dryRun: Boolean(o.dryRun) }), 2), ['s3']));

  program
    .command('replicate')
    .description('copy the archive to a second bucket (the offsite copy of 3-2-1)')
    .requiredOption('--to-bucket <name>', 'destination bucket')
    .option('--to-endpoint <url>', 'destination endpoint (default: the same)')
    .action(
      action(
        async (ctx, o) => {
          const report = await (
            await import('../ops/replicate.js')
          ).replicateArchive(ctx, { toBucket: String(o.toBucket), toEndpoint: o.toEndpoint as string | undefined });
          printJson(report);
        },
        ['s3'],
      ),
    );

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

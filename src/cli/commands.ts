import type { Command } from 'commander';
import { splitList } from '../config/config.js';
import { CdpError, ErrorCodes, ExitCode } from '../errors.js';
import type { CommandContext } from '../context.js';
import type { Component } from '../ops/preflight.js';
import { printJson, printSetupRefused, restoreDisplay } from './output.js';

// The subcommands of `cdp`, one function each: its options, help text and what its action calls.
// src/cli/main.ts builds the program, adds the global flags and registers these in COMMANDS order
// (the order `cdp --help` lists them in).

type Handler = (ctx: CommandContext, opts: Record<string, unknown>) => Promise<number | void>;
/** Wraps a handler into a commander action: context, start-up probes of `needs`, exit code. */
export type ActionFactory = (fn: Handler, needs?: Component[]) => (opts: Record<string, unknown>, cmd: Command) => Promise<void>;

function parseInteger(name: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v)) throw new CdpError(ErrorCodes.USAGE, `${name}: expected a whole number, got ${JSON.stringify(v)}`);
    return Number(v);
  };
}

function setup(program: Command, action: ActionFactory): void {
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
}

/** capture, archive and run: the daemons, no options of their own. */
function daemons(program: Command, action: ActionFactory): void {
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
}

/** basebackup and compact: the two ways to a new base. */
function bases(program: Command, action: ActionFactory): void {
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
}

function restore(program: Command, action: ActionFactory): void {
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
    .action(action(runRestoreCommand));
}

async function runRestoreCommand(ctx: CommandContext, o: Record<string, unknown>): Promise<void> {
  const target = { time: o.time as string | undefined, lsn: o.lsn as string | undefined, xid: o.xid as number | undefined, latest: Boolean(o.latest) };
  (await import('../restore/target.js')).checkOneTarget(target);
  if (o.dryRun && o.sql) throw new CdpError(ErrorCodes.USAGE, '--dry-run and --sql contradict each other: choose one');
  // After the flags are checked: a usage error is reported whatever the state of S3.
  await (await import('../ops/preflight.js')).preflight(ctx.cfg, ['s3']);
  const report = await (
    await import('../restore/restore.js')
  ).runRestore(
    ctx,
    {
      into: String(o.into),
      ...target,
      tables: o.tables ? splitList(String(o.tables)) : undefined,
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
}

/** status and info: where the archive stands, from all components or from the archive alone. */
function reports(program: Command, action: ActionFactory): void {
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
}

/** verify, prune and replicate: keeping the archive sound, bounded and copied. */
function upkeep(program: Command, action: ActionFactory): void {
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
}

/** Every subcommand's registration, in the order help lists them. */
export const COMMANDS: Array<(program: Command, action: ActionFactory) => void> = [setup, daemons, bases, restore, reports, upkeep];

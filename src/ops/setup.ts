import type { CommandContext } from '../context.js';

// `cdp setup` as a command: the source, Kafka and archive set-up of src/capture/setup.ts, then the
// first base backup, unless --no-basebackup.

export async function runSetup(ctx: CommandContext, opts: { basebackup: boolean; replicaIdentityFull?: boolean }): Promise<void> {
  const { setup } = await import('../capture/setup.js');
  await setup(ctx, { replicaIdentityFull: opts.replicaIdentityFull });
  if (opts.basebackup) {
    ctx.log.info('setup: taking the first base backup');
    await (await import('../base/basebackup.js')).takeBaseBackup(ctx);
  } else {
    ctx.log.info('setup: no base backup taken (--no-basebackup); restore needs one: run `cdp basebackup`');
  }
}

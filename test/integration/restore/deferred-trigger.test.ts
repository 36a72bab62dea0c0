import type { ChildProcess } from 'node:child_process';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../../src/util/lsn.js';
import {
  adminUrl,
  createDatabase,
  dropDatabase,
  fingerprint,
  pipelineEnv,
  rand,
  restorableLsn,
  runCli,
  stackEnvironment,
  startRun,
  waitFor,
  withClient,
} from './helpers.js';

// A deferrable trigger enabled ALWAYS fires during replay at COMMIT, which the restore's superuser
// session issues: its function would run as the superuser, not as the table's owner. Restore stops
// before the replay with exit 1 naming the trigger and what to do; done that (the trigger fires on
// origin only in the target), the same command resumes and the restore is exact.
const name = `deftrg_${rand()}`;
const role = `${name}_app`;
let url = '';
let env: Record<string, string> = {};
let run: ChildProcess | undefined;
const into = `${name}_r`;

beforeAll(async () => {
  stackEnvironment();
  url = await createDatabase(name);
  env = pipelineEnv(name, url, 'test-deftrg');
  await withClient(url, async (c) => {
    await c.query(`CREATE ROLE ${role}`);
    await c.query(`CREATE TABLE public.t (id int PRIMARY KEY, v text); ALTER TABLE public.t OWNER TO ${role}`);
    await c.query(
      `CREATE FUNCTION public.trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$; ALTER FUNCTION public.trg() OWNER TO ${role}`,
    );
    await c.query(`CREATE CONSTRAINT TRIGGER late AFTER INSERT ON public.t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.trg()`);
    await c.query(`ALTER TABLE public.t ENABLE ALWAYS TRIGGER late`);
    await c.query(`INSERT INTO public.t VALUES (1, 'base')`);
  });
});

afterAll(async () => {
  if (run && run.exitCode === null) run.kill('SIGKILL');
  await dropDatabase(name);
  await dropDatabase(into).catch(() => {});
  await withClient(adminUrl(), (c) => c.query(`DROP ROLE IF EXISTS ${role}`));
});

describe('a deferrable trigger that fires during replay', () => {
  it('stops the restore before the replay (exit 1); once it fires on origin only, the same command resumes, exact', async () => {
    const setup = await runCli(['setup'], env);
    expect(setup.code, setup.stderr).toBe(0);
    run = startRun(env);
    const s = await withClient(url, async (c: pg.Client) => {
      await c.query(`INSERT INTO public.t SELECT g, 'row ' || g FROM generate_series(2, 50) g`);
      await c.query(`UPDATE public.t SET v = v || '!' WHERE id % 7 = 0`);
      const l = (await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
      return { l, fp: await fingerprint(c) };
    });
    await waitFor(`restorable point past ${s.l}`, async () => ((await restorableLsn(env)) ?? -1) >= parseLsn(s.l));
    const target = await createDatabase(into);
    const args = ['restore', '--into', target, '--lsn', s.l];
    const first = await runCli(args, env);
    expect(first.code, first.stderr).toBe(1);
    expect(first.stderr).toContain('has the deferrable trigger late');
    expect(first.stderr).toContain('ALTER TABLE public.t ENABLE TRIGGER late');
    // Nothing of the replay was committed: the target holds the base's row only.
    expect(await withClient(target, async (c) => (await c.query('SELECT id, v FROM public.t ORDER BY id')).rows)).toEqual([{ id: 1, v: 'base' }]);
    await withClient(target, (c) => c.query('ALTER TABLE public.t ENABLE TRIGGER late'));
    const second = await runCli(args, env);
    expect(second.code, second.stderr).toBe(0);
    expect(await withClient(target, fingerprint)).toEqual(s.fp);
  }, 600_000);
});

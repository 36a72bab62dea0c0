import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';

// Issue 14, conventions: the container runs node under tini (SIGTERM reaches cdp on docker stop),
// compose pins every image and publishes the metrics port, the LICENSE is the one package.json names.

const read = (p: string) => readFileSync(new URL(`../../${p}`, import.meta.url), 'utf8');

describe('deployment files', () => {
  it('the image runs node directly under tini, never through npx', () => {
    const dockerfile = read('deploy/Dockerfile');
    const entry = /^ENTRYPOINT (.*)$/m.exec(dockerfile)![1]!;
    const argv = JSON.parse(entry) as string[];
    expect(argv.slice(0, 3)).toEqual(['/usr/bin/tini', '--', 'node']);
    expect(argv.join(' ')).not.toMatch(/npx|npm/);
    // node's flags in the image are those of the bin's shebang (the young generation's size).
    const shebangFlags = read('bin/cdp.mjs')
      .split('\n')[0]!
      .split(' ')
      .filter((w) => w.startsWith('--'));
    expect(shebangFlags.length).toBeGreaterThan(0);
    expect(argv.slice(3)).toEqual([...shebangFlags, '/app/bin/cdp.mjs']);
    expect(dockerfile).toMatch(/apt-get install[^\n]*\btini\b/);
  });

  it('compose pins every image, publishes and scrapes the metrics port', () => {
    const compose = parseYaml(read('deploy/docker-compose.yml')) as {
      services: Record<string, { image?: string; ports?: string[]; environment?: Record<string, string>; volumes?: string[] }>;
    };
    for (const [name, svc] of Object.entries(compose.services)) {
      if (!svc.image || svc.image === 'katya-cdp:local') continue;
      expect(svc.image, name).toMatch(/:[^:]+$/);
      expect(svc.image, name).not.toMatch(/:latest$/);
    }
    const cdp = compose.services.cdp!;
    expect(cdp.ports).toContain('127.0.0.1:9464:9464');
    expect(cdp.environment?.CDP_METRICS_HOST).toBe('0.0.0.0');
    expect(compose.services.prometheus?.volumes?.join(' ')).toMatch(/alerts\.yml/);
  });

  it('LICENSE is the Apache License 2.0 that package.json declares', () => {
    expect((JSON.parse(read('package.json')) as { license: string }).license).toBe('Apache-2.0');
    const license = read('LICENSE');
    expect(license).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004/);
    expect(license).toMatch(/END OF TERMS AND CONDITIONS/);
  });
});

import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import { parseTestFaults } from '../../../src/testing/faults.js';

describe('CDP_TEST_FAULTS, the one test-only seam', () => {
  it('is empty when unset', () => {
    expect(parseTestFaults({}).size).toBe(0);
  });

  it('parses several hooks under the test suite', () => {
    const f = parseTestFaults({ VITEST: 'true', CDP_TEST_FAULTS: 'crash-after-upload:3, restore-group-delay-ms:300' });
    expect([...f]).toEqual([
      ['crash-after-upload', 3],
      ['restore-group-delay-ms', 300],
    ]);
  });

  it('takes compact-pause with a step name, and only a step compact has', () => {
    expect([...parseTestFaults({ VITEST: 'true', CDP_TEST_FAULTS: 'compact-pause:read-back,crash-after-commit:2' })]).toEqual([
      ['compact-pause', 'read-back'],
      ['crash-after-commit', 2],
    ]);
    expect(() => parseTestFaults({ VITEST: 'true', CDP_TEST_FAULTS: 'compact-pause:somewhere' })).toThrow(/unknown hook "compact-pause:somewhere"/);
    expect(() => parseTestFaults({ VITEST: 'true', CDP_TEST_FAULTS: 'crash-after-upload:dumped' })).toThrow(/unknown hook/);
  });

  it('is refused outside the test suite, naming the variable (exit 2)', () => {
    const run = () => parseTestFaults({ CDP_TEST_FAULTS: 'crash-after-commit:1' });
    expect(run).toThrow(ConfigError);
    expect(run).toThrow(/^CDP_TEST_FAULTS: is a test-only hook and is refused outside the test suite/);
  });

  it('refuses an unknown hook rather than ignoring it', () => {
    expect(() => parseTestFaults({ NODE_ENV: 'test', CDP_TEST_FAULTS: 'crash-after-upload' })).toThrow(/unknown hook "crash-after-upload"/);
    expect(() => parseTestFaults({ NODE_ENV: 'test', CDP_TEST_FAULTS: 'explode:1' })).toThrow(/unknown hook "explode:1"/);
  });
});

import { defineConfig } from 'vitest/config';

// Test workers build AWS SDK clients in-process: the same reason as bin/cdp.mjs to silence the
// SDK's Node 20 notice (set here, in the parent, so every forked worker inherits it).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// Two tiers (STYLE.md habit 6): `unit` needs no service; `integration` talks to the real
// Postgres, Kafka and S3 server of deploy/local, which the global setup brings up when absent.
export default defineConfig({
  test: {
    // Integration files spawn daemons and restart services; run them one file at a time.
    fileParallelism: false,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
          // Some unit tests start the CLI as a process (tsx compiles it first): seconds on a loaded
          // 2-core machine. Nothing here asserts on time, so the limit only catches a hang.
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['test/setup/global-setup.ts'],
          // Capture writes zstd record batches: every kafkajs reader in the tests needs the codec.
          setupFiles: ['src/kafka/codecs.ts'],
          // Real services on a shared, noisy 2-core machine: generous timeouts, no timing assertions.
          testTimeout: 600_000,
          hookTimeout: 600_000,
          pool: 'forks',
        },
      },
      {
        // The version matrix (README "PostgreSQL versions"): sources and targets of other majors,
        // on extra clusters that its own global setup starts (stack.sh up --pg 16,17,18). Slow
        // (several whole pipelines), so apart; `npm test` runs it like the others.
        test: {
          name: 'majors',
          include: ['test/majors/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['test/setup/majors-setup.ts'],
          setupFiles: ['src/kafka/codecs.ts'],
          testTimeout: 900_000,
          hookTimeout: 900_000,
          pool: 'forks',
        },
      },
    ],
  },
});

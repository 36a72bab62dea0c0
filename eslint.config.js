// Lint of the whole TypeScript tree (src, test, bench), type-aware: `npm run lint`, run by .ci/run
// after `tsc --noEmit` and before the tests. Flat config of typescript-eslint
// (https://typescript-eslint.io/getting-started/typed-linting).
//
// Base: ESLint's recommended rules and typescript-eslint's recommended-type-checked set, which
// includes the rules this project relies on: no-floating-promises, no-misused-promises,
// await-thenable, no-unused-vars. Turned off, with the reason:
// - no-unnecessary-type-assertion: flags the `!` after indexed reads (`cols[i]!`) the code writes on
//   purpose; tsconfig does not set noUncheckedIndexedAccess, and removing ~350 of them would churn
//   every file for no behaviour change (and they would be needed again with that option).
// - no-unsafe-*: values typed `any` by JSON.parse and pg rows; typing them is the job of the
//   change-event format module (issue 12, item 1), not of the linter set-up.
// - require-await: async functions without an await are kept async on purpose (interfaces,
//   thrown errors become rejections).
// - no-base-to-string: every finding is String() of a field of the parsed DDL payload
//   (Record<string, unknown>) or of a caught error, strings and Errors at run time; the typed DDL
//   payload (issue 12, item 1) removes the need for these String() calls.
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'deploy/**', 'bin/**', '**/*.js', '**/*.mjs'] },
  eslint.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // Passing an abort reason or a caught value through as the rejection is deliberate.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingAny: true, allowThrowingUnknown: true }],
      // `let x; [x, pos] = read(buf, pos)`: the cursor is reassigned, the value is not.
      'prefer-const': ['error', { destructuring: 'all' }],
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-base-to-string': 'off',
    },
  },
  {
    // kafkajs only through its public API (src/kafka/client.ts): its private modules and symbols
    // change without notice; the protocol the engine speaks itself lives in src/kafka/protocol.
    // Tests may read kafkajs internals as an oracle (test/unit/kafka/record-batch.test.ts).
    files: ['src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['kafkajs/*'], message: 'kafkajs private modules: use its public API, or src/kafka/protocol' }] },
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: "CallExpression[callee.name='require'][arguments.0.value=/^kafkajs\\u002F/]",
          message: 'kafkajs private modules: use its public API, or src/kafka/protocol',
        },
        {
          selector: 'Literal[value=/^private:Kafka/]',
          message: 'kafkajs private symbols: use its public API, or src/kafka/protocol',
        },
      ],
    },
  },
  {
    // Tests read the CLI's JSON output loosely.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);

#!/usr/bin/env -S node --max-semi-space-size=64
// Entry point installed by `npm ci` as `cdp`. The sources are TypeScript run through tsx's
// loader, so there is no build step to forget and no stale output to run.
//
// --max-semi-space-size=64 (MiB; node 20's default is 16): restore's replay holds a decoded block
// per partition and the coalescing buffer, more than the default young generation, so they were
// promoted and collected by full mark-compacts: garbage collection was a third of restore's CPU
// (docs/restore-profile.md). V8 reads the flag only at start-up (v8.setFlagsFromString does not
// resize new space), hence the shebang. `node bin/cdp.mjs` runs without it: correct, only slower;
// the Dockerfile's entrypoint passes the same flags to node (test/unit/deploy.test.ts).
import { register } from 'tsx/esm/api';

// The AWS SDK warns on every start that its releases after January 2027 need Node 22. The lock file
// pins a release that supports Node 20, so the warning tells an operator nothing they can act on;
// the README's limits say so once instead.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);

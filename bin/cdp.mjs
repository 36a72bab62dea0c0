#!/usr/bin/env node
// Entry point installed by `npm ci` as `cdp`. The sources are TypeScript run through tsx's
// loader, so there is no build step to forget and no stale output to run.
import { register } from 'tsx/esm/api';

// The AWS SDK warns on every start that its releases after January 2027 need Node 22. The lock file
// pins a release that supports Node 20, so the warning tells an operator nothing they can act on;
// the README's limits say so once instead.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);

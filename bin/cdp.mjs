#!/usr/bin/env node
// Entry point installed by `npm ci` as `cdp`. The sources are TypeScript run through tsx's
// loader, so there is no build step to forget and no stale output to run.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);

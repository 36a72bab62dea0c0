// What setup's checks find (setup.ts): problems block (nothing is created, exit 2), warnings do not.

import { toError } from '../errors.js';

export interface Findings {
  problems: string[];
  warnings: string[];
}

export function describe(err: unknown): string {
  return toError(err).message;
}

// One error hierarchy with a closed list of stable codes, which operators can alert on. Every failure that
// reaches the CLI is a CdpError; its code decides the exit status documented in DESIGN.md section 6.

export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  integrity: 3,
  rpoBreached: 4,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** Stable error codes. Never rename one: operators grep logs and alert on them. */
export const ErrorCodes = {
  CONFIG_INVALID: 'CDP_CONFIG_INVALID',
  USAGE: 'CDP_USAGE',
  SOURCE_UNREACHABLE: 'CDP_SOURCE_UNREACHABLE',
  SOURCE_NOT_READY: 'CDP_SOURCE_NOT_READY',
  PG_ERROR: 'CDP_PG_ERROR',
  PROTOCOL: 'CDP_PROTOCOL',
  KAFKA: 'CDP_KAFKA',
  S3: 'CDP_S3',
  INTEGRITY: 'CDP_INTEGRITY',
  ENCRYPTION: 'CDP_ENCRYPTION',
  TARGET_OUT_OF_RANGE: 'CDP_TARGET_OUT_OF_RANGE',
  TARGET_NOT_EMPTY: 'CDP_TARGET_NOT_EMPTY',
  SHUTDOWN: 'CDP_SHUTDOWN',
  /** A one-shot command (restore) stopped by a signal before it finished: its work is incomplete. */
  INTERRUPTED: 'CDP_INTERRUPTED',
  /** The archive holds something restore cannot replay faithfully (named in the message). */
  UNSUPPORTED: 'CDP_UNSUPPORTED',
  INTERNAL: 'CDP_INTERNAL',
  /** A daemon made no progress for watchdog.stallSeconds (issue 14): exit 1 so a supervisor restarts it. */
  STALLED: 'CDP_STALLED',
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

const exitFor: Record<ErrorCode, ExitCode> = {
  CDP_CONFIG_INVALID: ExitCode.usage,
  CDP_USAGE: ExitCode.usage,
  CDP_SOURCE_UNREACHABLE: ExitCode.failure,
  CDP_SOURCE_NOT_READY: ExitCode.usage,
  CDP_PG_ERROR: ExitCode.failure,
  CDP_PROTOCOL: ExitCode.failure,
  CDP_KAFKA: ExitCode.failure,
  CDP_S3: ExitCode.failure,
  CDP_INTEGRITY: ExitCode.integrity,
  CDP_ENCRYPTION: ExitCode.integrity,
  CDP_TARGET_OUT_OF_RANGE: ExitCode.usage,
  CDP_TARGET_NOT_EMPTY: ExitCode.usage,
  CDP_SHUTDOWN: ExitCode.ok,
  CDP_INTERRUPTED: ExitCode.failure,
  CDP_UNSUPPORTED: ExitCode.failure,
  CDP_INTERNAL: ExitCode.failure,
  CDP_STALLED: ExitCode.failure,
};

export interface CdpErrorOptions {
  cause?: unknown;
  /** True when retrying the same operation later may succeed (network, throttling, outage). */
  canRetry?: boolean;
  /** Extra machine-readable facts: SQLSTATE, S3 error code, Kafka error type, field path. */
  details?: Record<string, unknown>;
}

export class CdpError extends Error {
  readonly code: ErrorCode;
  readonly canRetry: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: CdpErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CdpError';
    this.code = code;
    this.canRetry = options.canRetry ?? false;
    this.details = options.details ?? {};
  }

  get exitCode(): ExitCode {
    return exitFor[this.code];
  }
}

export class ConfigError extends CdpError {
  constructor(message: string, field?: string, options: CdpErrorOptions = {}) {
    super(ErrorCodes.CONFIG_INVALID, field ? `${field}: ${message}` : message, {
      ...options,
      details: { ...options.details, field },
    });
    this.name = 'ConfigError';
  }
}

export class IntegrityError extends CdpError {
  constructor(message: string, options: CdpErrorOptions = {}) {
    super(ErrorCodes.INTEGRITY, message, options);
    this.name = 'IntegrityError';
  }
}

/** Every catch normalises its value to an Error, keeping the original as cause. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  const err = new Error(typeof value === 'string' ? value : safeStringify(value));
  (err as Error & { cause?: unknown }).cause = value;
  return err;
}

function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Wraps a node-postgres DatabaseError, keeping SQLSTATE and the server's detail and hint. */
export function pgError(message: string, cause: unknown, canRetry = false): CdpError {
  const e = cause as { code?: string; detail?: string; hint?: string; table?: string; constraint?: string; message?: string };
  const suffix = e?.message ? `: ${e.message}` : '';
  return new CdpError(ErrorCodes.PG_ERROR, `${message}${suffix}`, {
    cause,
    canRetry,
    details: { sqlstate: e?.code, detail: e?.detail, hint: e?.hint, table: e?.table, constraint: e?.constraint },
  });
}

// The JSON payloads carried in a change event's `content` (format 1 and 2 alike), described in one
// place. DDL and SEQUENCES payloads travel inside a signed envelope (src/capture/ddl-capture.sql,
// verified by capture's mapper, which keeps only the verified body); the event's content is that
// body. docs/format.md has the table of which op carries which payload.

/** One row of pg_event_trigger_ddl_commands() (v2 keys) or of v1 bodies (object_type ...). */
export interface DdlObject {
  objectType?: string;
  schema?: string | null;
  identity?: string;
  commandTag?: string;
  inExtension?: boolean;
  [key: string]: unknown;
}

/** One row of pg_event_trigger_dropped_objects(). */
export interface DdlDropped {
  objectType?: string;
  schema?: string | null;
  name?: string | null;
  identity?: string;
  original?: boolean;
  temporary?: boolean;
  [key: string]: unknown;
}

/**
 * A DDL event's content: the body written by the capture event trigger (ddl-capture.sql,
 * katya_cdp_ddl_command_end). v2 is today's body; v1 (no `v`) is the body of versions before it.
 */
export interface DdlContent {
  /** 2 today; absent in v1 bodies. */
  v?: number;
  /** server_version_num of the source (which statements fire DDL events differs by major). */
  serverVersion?: number;
  /** current_query(): the client's whole query string. */
  command: string;
  /** The command tag (CREATE TABLE, ALTER TABLE, ...). */
  tag?: string;
  /** 1-based ordinal of this event among the top-level DDL events of the query string; null when nested. */
  seq?: number | null;
  /** Ran inside a function, procedure or DO block. */
  nested?: boolean;
  /** Nested only: PG_CONTEXT below the trigger's frame (holds the inner statement text). */
  context?: string | null;
  /** Every object belongs to an extension being created or updated. */
  inExtension?: boolean;
  /** current_user when the command ran (session_user when that could not be vouched for). */
  role?: string;
  roleVerified?: boolean;
  sessionUser?: string;
  /** The schemas the search_path resolved to, quoted. */
  searchPath?: string;
  /** Session settings that change how DDL text parses or evaluates (TimeZone, DateStyle, ...). */
  settings?: Record<string, string>;
  objects?: DdlObject[];
  dropped?: DdlDropped[];
  /** table_rewrite events of this command. */
  rewrites?: Array<{ table?: string; reason?: number; hadRows?: boolean }>;
  /** ALTER TABLE: columns with a "missing value" (pg_attribute.attmissingval). */
  missing?: Array<{ table: string; column: string; value: string }>;
  /** v1: the previous DDL event of the transaction had the same command text. */
  repeatOfPrevious?: boolean;
}

/** The signed envelope of DDL and SEQUENCES messages in the WAL (capture verifies and unwraps it). */
export interface SignedMessage {
  /** base64 of the UTF-8 body. */
  b64: string;
  /** hex HMAC-SHA256(key, UTF-8 body); null when the key could not be read. */
  mac: string | null;
}

/** TRUNCATE content (capture's mapper). */
export interface TruncateContent {
  relations: Array<[schema: string, table: string]>;
  cascade: boolean;
  restartIdentity: boolean;
}

/** SEQUENCES content: last_value of each sequence, by "schema.sequence". */
export type SequencesContent = Record<string, string | number>;

/** WATERMARK content. */
export interface WatermarkContent {
  partition: number;
}

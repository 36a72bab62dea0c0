// Connection strings for the PostgreSQL client programs we run (pg_dump, pg_restore): the password
// never goes on their command line, where `ps` and /proc/<pid>/cmdline show it to every user of
// the machine. It is taken out of the URL (user info, or a `password` query parameter) and handed
// to the child as PGPASSWORD, in its environment, which Linux shows only to the same user (and
// root). libpq reads PGPASSWORD when the connection string has no password (docs 34.15
// "Environment Variables"). A URL without a password leaves the environment as it is, so
// PGPASSWORD or ~/.pgpass set by the operator keep working.

import { childTls, type PgTlsConfig } from './tls.js';

export interface ChildConnection {
  /** The URL without its password, safe for argv. */
  url: string;
  /** The child's environment: the parent's, plus PGPASSWORD when the URL carried a password. */
  env: NodeJS.ProcessEnv;
  /** Removes a decrypted client key (tls.ts) once the child has exited; absent when there is none. */
  cleanup?: () => void;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Splits `url` into a password-free URL and the environment carrying the password. Only the
 * password is touched: the rest of the URL (host, port, database, other parameters) is kept byte
 * for byte. Strings that are not URLs (a libpq key=value conninfo) are refused rather than risked.
 */
export function childConnection(url: string, parentEnv: NodeJS.ProcessEnv = process.env, tls?: PgTlsConfig, tlsField = 'source.tls'): ChildConnection {
  if ((tls && Object.values(tls).some((v) => v !== undefined)) || /[?&]sslpassword=/.test(url)) {
    // The configuration's TLS settings go to the child as PGSSL* variables (tls.ts), and the URL's
    // own ssl* parameters are taken out so they cannot contradict them.
    const t = childTls(url, tls, tlsField, parentEnv);
    const inner = childConnection(t.url, parentEnv);
    return { url: inner.url, env: { ...inner.env, ...t.env }, ...(t.cleanup ? { cleanup: t.cleanup } : {}) };
  }
  const m = /^(postgres(?:ql)?:\/\/)([^/?#]*)(.*)$/s.exec(url);
  if (!m) throw new Error('a PostgreSQL connection URL (postgres://...) is expected');
  const [, scheme, authority, rest] = m as unknown as [string, string, string, string];
  let password: string | undefined;
  let auth = authority;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    const colon = userinfo.indexOf(':');
    if (colon >= 0) {
      password = decode(userinfo.slice(colon + 1));
      auth = `${userinfo.slice(0, colon)}${authority.slice(at)}`;
    }
  }
  let tail = rest;
  const q = rest.indexOf('?');
  if (q >= 0) {
    const hash = rest.indexOf('#', q);
    const query = rest.slice(q + 1, hash >= 0 ? hash : undefined);
    const kept: string[] = [];
    for (const part of query.split('&')) {
      const eq = part.indexOf('=');
      const name = decode(eq >= 0 ? part.slice(0, eq) : part);
      if (name === 'password') password = decode(eq >= 0 ? part.slice(eq + 1) : '');
      else if (part !== '') kept.push(part);
    }
    tail = `${rest.slice(0, q)}${kept.length ? `?${kept.join('&')}` : ''}${hash >= 0 ? rest.slice(hash) : ''}`;
  }
  const env = { ...parentEnv };
  if (password !== undefined && password !== '') env.PGPASSWORD = password;
  return { url: `${scheme}${auth}${tail}`, env };
}

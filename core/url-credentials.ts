/**
 * A URL string as it may be shown in a message or a log line: everything from after the scheme
 * (`postgres://`) to the last `@` (user and password) removed. Works on strings that do not parse
 * as URLs too — a password holding `/`, `?`, `#` or `@` unescaped is the usual reason a store URL
 * fails to parse — and removes too much rather than too little when an `@` comes later in the
 * string.
 */
export function withoutCredentials(url: string): string {
  const at = url.lastIndexOf('@');
  if (at === -1) return url;
  // Whatever stands between the scheme (and its slashes, however many a typo left) and the last
  // `@`: `postgres:/u:secret@host` and `postgresql:u:secret@host` hide their password as well.
  const scheme = /^[a-z][a-z0-9+.-]*:\/*/i.exec(url);
  return scheme ? scheme[0] + url.slice(at + 1) : url.slice(at + 1);
}

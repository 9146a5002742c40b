/**
 * A URL string as it may be shown in a message or a log line: everything from `//` to the last `@`
 * (user and password) removed. Works on strings that do not parse as URLs too — a password holding
 * `/`, `?`, `#` or `@` unescaped is the usual reason a store URL fails to parse — and removes too
 * much rather than too little when an `@` comes later in the string.
 */
export function withoutCredentials(url: string): string {
  return url.replace(/\/\/.*@/s, '//');
}

// What the bundles take from undici (decision 0100), in place of the package's index. undici's
// index.js loads all of undici — fetch, WebSocket, EventSource, cookies, caches, mocks — and, through
// the web globals those touch, Node's own internal copy of undici: ~40 ms and ~300 KB of source
// that every `portcullis sidecar` start paid for three classes. The build (scripts/build.ts)
// resolves our sources' `from 'undici'` to this module; `node file.ts` runs the full package. A
// name our sources import that this module does not export fails the build.
import Agent from 'undici/lib/dispatcher/agent.js';
import Dispatcher from 'undici/lib/dispatcher/dispatcher.js';
import Pool from 'undici/lib/dispatcher/pool.js';
import api from 'undici/lib/api/index.js';
import errors from 'undici/lib/core/errors.js';
import { URL } from 'node:url';

// As undici's index does: dispatcher.request(), .stream(), … on every Agent, Pool and Client.
Object.assign(Dispatcher.prototype, api);

/**
 * undici's `request(url, options)` for the calls our sources make: an absolute URL (string or URL)
 * and an explicit `dispatcher` (there is no global one here: none of our calls uses it).
 * @param {string | URL} url
 * @param {{ dispatcher?: object, method?: string, body?: unknown } & Record<string, unknown>} options
 */
export function request(url, options) {
  if (!options?.dispatcher) throw new errors.InvalidArgumentError('request() needs options.dispatcher');
  const u = new URL(url);
  return api.request.call(options.dispatcher, {
    ...options,
    origin: u.origin,
    path: u.search ? `${u.pathname}${u.search}` : u.pathname,
    method: options.method || (options.body ? 'PUT' : 'GET'),
  });
}

export { Agent, Pool, errors };

/**
 * Keys that lead into an object's prototype: setting `__proto__.x` or `constructor.prototype.x` on a plain object
 * would change every object in the process. No scenario has members by these names.
 */
const PROTOTYPE_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

export const isPrototypeKey = (key: string | number): boolean =>
  typeof key === 'string' && PROTOTYPE_KEYS.has(key);

/** The keys of a path's syntax, whatever their names. */
function splitPath(path: string): (string | number)[] | undefined {
  const keys: (string | number)[] = [];
  const re = /([A-Za-z_][\w-]*)|\[(\d+)\]|(\.)/gy;
  let expectKey = true;
  let m: RegExpExecArray | null;
  let at = 0;
  while (at < path.length) {
    re.lastIndex = at;
    m = re.exec(path);
    if (!m) return undefined;
    if (m[1] !== undefined) {
      if (!expectKey) return undefined;
      keys.push(m[1]);
      expectKey = false;
    } else if (m[2] !== undefined) {
      if (keys.length === 0) return undefined;
      keys.push(Number(m[2]));
    } else {
      if (expectKey) return undefined;
      expectKey = true;
    }
    at = re.lastIndex;
  }
  return keys.length > 0 && !expectKey ? keys : undefined;
}

/**
 * Parses a scenario path such as `community.archetypes[1].pv_kwp` into keys; undefined when it is not one (bad
 * syntax, or a key that leads into a prototype).
 */
export function parsePath(path: string): (string | number)[] | undefined {
  const keys = splitPath(path);
  return keys?.some(isPrototypeKey) ? undefined : keys;
}

/** Why `path` is not a scenario path, or undefined when it is one. */
export function pathProblem(path: string): string | undefined {
  const keys = splitPath(path);
  if (!keys)
    return `${JSON.stringify(path)} is not a scenario path (expected e.g. "market.mechanism" or "community.archetypes[0].pv_kwp")`;
  const bad = keys.find(isPrototypeKey);
  if (bad !== undefined)
    return `${JSON.stringify(path)} is not a scenario path (${JSON.stringify(bad)} is never a scenario key)`;
  return undefined;
}

/**
 * Why a sweep may not set `path`, or undefined when it may. Besides being a scenario path, it must leave the seed
 * alone: expansion gives run r the same derived seed at every sweep point (common random numbers), so a swept seed
 * would be overwritten and its points would repeat each other.
 */
export function sweepPathProblem(path: string): string | undefined {
  const problem = pathProblem(path);
  if (problem) return problem;
  if (parsePath(path)![0] === 'seed')
    return `"seed" cannot be swept: each run's seed derives from the study's "seed" and "runs" (common random numbers, the same at every sweep point); raise "runs" for more samples or change the study's "seed"`;
  return undefined;
}

/**
 * Sets `value` at `keys` inside a JSON value, in place. Missing object members along the way are created; array
 * indices must exist. Only own members are followed, and prototype keys are refused, so nothing outside `target`
 * can change. Returns an error message, or undefined on success.
 */
export function setAtPath(
  target: unknown,
  keys: readonly (string | number)[],
  value: unknown,
): string | undefined {
  let cur = target as Record<string | number, unknown>;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const last = i === keys.length - 1;
    if (isPrototypeKey(key)) return `${JSON.stringify(key)} is never a scenario key`;
    if (typeof key === 'number') {
      if (!Array.isArray(cur)) return `${describe(keys, i)} is not a list`;
      if (key >= cur.length)
        return `${describe(keys, i + 1)} does not exist (the list has ${cur.length} entries)`;
    } else if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) {
      return `${describe(keys, i)} is not an object`;
    }
    if (last) {
      cur[key] = value;
    } else {
      // An inherited member (`toString`) is not the scenario's: the path creates an own one instead.
      if (typeof key === 'string' && (!Object.hasOwn(cur, key) || cur[key] === undefined))
        cur[key] = typeof keys[i + 1] === 'number' ? [] : {};
      cur = cur[key] as Record<string | number, unknown>;
    }
  }
  return undefined;
}

function describe(keys: readonly (string | number)[], upTo: number): string {
  return keys
    .slice(0, upTo)
    .map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? k : `.${k}`))
    .join('');
}

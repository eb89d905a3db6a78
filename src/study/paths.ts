/** Parses a scenario path such as `community.archetypes[1].pv_kwp` into keys. */
export function parsePath(path: string): (string | number)[] | undefined {
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
 * Sets `value` at `keys` inside a JSON value, in place. Missing object members along the way are created; array
 * indices must exist. Returns an error message, or undefined on success.
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
      if (cur[key] === undefined && typeof key === 'string')
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

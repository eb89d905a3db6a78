import type { z } from 'zod';

type RawIssue = Parameters<Extract<z.core.$ZodErrorMap, (...args: never[]) => unknown>>[0];

const bound = (inclusive: boolean | undefined, strict: string, loose: string) =>
  inclusive === false ? strict : loose;

/**
 * Messages that say what was expected in the user's terms ("expected a number ≥ 0"); the value that was found
 * is appended by describeIssues. Schema-level messages take precedence over these.
 */
export function friendlyError(issue: RawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) return `required ${issue.expected} is missing`;
      // zod refuses NaN and ±Infinity (JSON's 1e400) as "not a number", which reads as a contradiction.
      if (typeof issue.input === 'number')
        return issue.expected === 'int' ? 'expected an integer' : 'expected a finite number';
      return `expected ${issue.expected}`;
    case 'too_small': {
      const what = issue.origin === 'array' ? 'at least' : bound(issue.inclusive, '>', '≥');
      const plural = Number(issue.minimum) === 1 ? '' : 's';
      const unit =
        issue.origin === 'array'
          ? plural
            ? ' entries'
            : ' entry'
          : issue.origin === 'string'
            ? ` character${plural}`
            : '';
      return issue.origin === 'number' || issue.origin === 'int'
        ? `expected a number ${what} ${issue.minimum}`
        : `expected ${what === '≥' ? 'at least' : what} ${issue.minimum}${unit}`;
    }
    case 'too_big': {
      const what = bound(issue.inclusive, '<', '≤');
      return issue.origin === 'number' || issue.origin === 'int'
        ? `expected a number ${what} ${issue.maximum}`
        : `expected at most ${issue.maximum}${issue.origin === 'array' ? ' entries' : ''}`;
    }
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return undefined;
  }
}

/** A problem with user input: printed as one line per issue, never with a stack trace; the CLI exits 2. */
export class InputError extends Error {
  readonly issues: readonly string[];
  constructor(what: string, issues: readonly string[]) {
    super(`${what}:\n${issues.map((i) => `  ${i}`).join('\n')}`);
    this.name = 'InputError';
    this.issues = issues;
  }
}

/** `community.archetypes[1].pv_kwp` from a zod issue path, under an optional root label. */
export function formatPath(path: readonly PropertyKey[], root = ''): string {
  let out = root;
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else {
      const k = String(key);
      out += /^[A-Za-z_$][\w$-]*$/.test(k) ? (out ? `.${k}` : k) : `[${JSON.stringify(k)}]`;
    }
  }
  return out || '(root)';
}

function valueAt(input: unknown, path: readonly PropertyKey[]): { found: boolean; value?: unknown } {
  let cur: unknown = input;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, key)) return { found: false };
    cur = (cur as Record<PropertyKey, unknown>)[key];
  }
  return { found: true, value: cur };
}

/** JSON.stringify writes NaN and ±Infinity as null, which would misreport what was found. */
const nonFinite = (_key: string, v: unknown) =>
  typeof v === 'number' && !Number.isFinite(v) ? String(v) : v;

function show(value: unknown): string {
  if (typeof value === 'number') return String(value);
  let s: string | undefined;
  try {
    s = JSON.stringify(value, nonFinite);
  } catch {
    // Too deep to print (a stack overflow), or not JSON at all (a BigInt): say what kind of value it is.
    s = undefined;
  }
  if (s === undefined)
    return Array.isArray(value) ? 'a list' : value && typeof value === 'object' ? 'an object' : String(value);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

/**
 * A custom issue whose message already says what was found sets these params, so that describeIssues does not
 * append the value again.
 */
export const VALUE_SHOWN = { valueShown: true } as const;

/** One line per zod issue: `path: message, got <value>`; an unknown key gets a line of its own. */
export function describeIssues(error: z.ZodError, input: unknown, root = ''): string[] {
  return error.issues.flatMap((issue) => {
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => `${formatPath([...issue.path, k], root)}: unknown key`);
    }
    const at = formatPath(issue.path, root);
    const got = valueAt(input, issue.path);
    const shown =
      issue.message.includes('got ') || (issue.code === 'custom' && issue.params?.valueShown === true);
    const suffix = issue.path.length > 0 && got.found && !shown ? `, got ${show(got.value)}` : '';
    return `${at}: ${issue.message}${suffix}`;
  });
}

/** Parses with a schema, turning failures into an InputError that names every bad path. */
export function parseInput<S extends z.ZodType>(
  schema: S,
  input: unknown,
  what: string,
  root = '',
): z.output<S> {
  const parsed = schema.safeParse(input, { error: friendlyError });
  if (!parsed.success) throw new InputError(what, describeIssues(parsed.error, input, root));
  return parsed.data;
}

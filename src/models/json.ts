import { formatPath, InputError } from './errors.ts';

/**
 * How deeply JSON input may nest. A scenario is some 6 levels deep and a submit request 8; much deeper input is
 * an attack on the recursive code downstream (structuredClone, JSON.stringify, canonical JSON), which would fail
 * with a stack overflow instead of an answer.
 */
export const MAX_JSON_DEPTH = 64;

interface Frame {
  value: object;
  depth: number;
  key: PropertyKey | undefined;
  parent: Frame | undefined;
}

/**
 * Where `value` nests deeper than `maxDepth` objects and arrays (the outermost counts as 1), as an issue line
 * (`study.scenario.x[0]: nested deeper than 64 levels`, paths under `root`), or undefined when it does not. Iterative,
 * so any depth is safe to check; a cycle counts as infinitely deep.
 */
export function depthProblem(value: unknown, maxDepth = MAX_JSON_DEPTH, root = ''): string | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const stack: Frame[] = [{ value, depth: 1, key: undefined, parent: undefined }];
  while (stack.length > 0) {
    const frame = stack.pop()!;
    if (frame.depth > maxDepth) {
      const path: PropertyKey[] = [];
      for (let f: Frame | undefined = frame; f?.key !== undefined; f = f.parent) path.push(f.key);
      const levels = maxDepth === 1 ? 'level' : 'levels';
      return `${formatPath(path.reverse(), root)}: nested deeper than ${maxDepth} ${levels}`;
    }
    const container = frame.value as Record<PropertyKey, unknown>;
    const isList = Array.isArray(container);
    const keys: readonly PropertyKey[] = isList ? [] : Object.keys(container);
    const n = isList ? container.length : keys.length;
    // Pushed last to first, so that the first deep member is the one reported.
    for (let i = n - 1; i >= 0; i--) {
      const key = isList ? i : keys[i]!;
      const child = container[key];
      if (child !== null && typeof child === 'object')
        stack.push({ value: child, depth: frame.depth + 1, key, parent: frame });
    }
  }
  return undefined;
}

/** Throws an InputError headed `what` when `value` nests deeper than `maxDepth` (see depthProblem). */
export function checkDepth(value: unknown, what: string, maxDepth = MAX_JSON_DEPTH, root = ''): void {
  const problem = depthProblem(value, maxDepth, root);
  if (problem) throw new InputError(what, [problem]);
}

/**
 * Parses JSON input (a request body, a file) for validation: bad JSON and over-deep nesting are InputErrors headed
 * `what`, with a `(root): not valid JSON (…)` or `<path>: nested deeper than 64 levels` issue. JSON.parse itself
 * is iterative in V8, so only what comes after needs the guard.
 */
export function parseJsonInput(text: string, what: string, maxDepth = MAX_JSON_DEPTH): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InputError(what, [`(root): not valid JSON (${(e as Error).message})`]);
  }
  checkDepth(value, what, maxDepth);
  return value;
}

import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/models/errors.ts';
import { checkDepth, depthProblem, parseJsonInput } from '../../src/models/json.ts';

function issues(f: () => unknown): string[] {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return [...(e as InputError).issues];
  }
  throw new Error('expected an InputError');
}

describe('JSON input', () => {
  it('parses JSON within the depth limit', () => {
    expect(parseJsonInput('{"a":[1,{"b":null}]}', 'invalid request')).toEqual({ a: [1, { b: null }] });
    expect(parseJsonInput(`${'['.repeat(64)}${']'.repeat(64)}`, 'x')).toBeInstanceOf(Array);
    expect(parseJsonInput('3', 'x')).toBe(3);
  });

  it('refuses bad JSON with the parser’s reason', () => {
    expect(issues(() => parseJsonInput('{"a":', 'invalid submit request'))).toEqual([
      expect.stringMatching(/^\(root\): not valid JSON \(.+\)$/),
    ]);
  });

  it('refuses nesting past the limit, naming where, without recursing', () => {
    const n = 200_000;
    const text = `{"study":{"scenario":${'['.repeat(n)}${']'.repeat(n)}}}`;
    expect(issues(() => parseJsonInput(text, 'invalid submit request'))).toEqual([
      `study.scenario${'[0]'.repeat(62)}: nested deeper than 64 levels`,
    ]);
    expect(depthProblem([[[]]], 2)).toBe('[0][0]: nested deeper than 2 levels');
    expect(depthProblem([[[]]], 3)).toBeUndefined();
    expect(depthProblem({ a: { b: 1 } }, 1, 'scenario')).toBe('scenario.a: nested deeper than 1 level');
  });

  it('checks already-parsed values, cycles included', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(issues(() => checkDepth(cyclic, 'invalid study', 3))).toEqual([
      'self.self.self: nested deeper than 3 levels',
    ]);
    expect(() => checkDepth({ a: [1, 2, { b: 'c' }] }, 'invalid study')).not.toThrow();
  });
});

/** A benchmark's numeric setting from the environment: `fallback` when unset, an error naming it when not a number ≥ 0. */
export function envNumber(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}: expected a number ≥ 0, got ${v}`);
  return n;
}

/**
 * Gini coefficient of possibly negative values, (Σᵢ Σⱼ |xᵢ − xⱼ|) / (2n²μ) computed on the sorted values. 0 when
 * all are equal; null when the mean is not positive (the index is then undefined).
 */
export function gini(values: readonly number[]): number | null {
  const n = values.length;
  if (n === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted[n - 1]! - sorted[0]! <= 1e-12 * Math.max(1, Math.abs(sorted[0]!))) return 0;
  let sum = 0;
  let weighted = 0;
  for (let i = 0; i < n; i++) {
    sum += sorted[i]!;
    weighted += (2 * (i + 1) - n - 1) * sorted[i]!;
  }
  return sum > 0 ? weighted / (n * sum) : null;
}

/** Rounds to 6 decimals: results stay readable and the digest stays stable against last-bit noise. */
export function round6(x: number): number {
  const r = Math.round(x * 1e6) / 1e6;
  return r === 0 ? 0 : r; // no -0 in canonical JSON
}

export function round6OrNull(x: number | null): number | null {
  return x === null || !Number.isFinite(x) ? null : round6(x);
}

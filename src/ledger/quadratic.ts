/**
 * Quadratic funding (Buterin, Hitzig & Weyl, "A Flexible Design for Funding Public Goods", 2019), pure: a matching
 * pool is shared among public goods in proportion to (Σⱼ √cⱼ)² − Σⱼ cⱼ, where cⱼ is what funder j gave the good.
 * The square of the sum of square roots rewards breadth: the same total from more funders is matched more, and a
 * good with one funder is not matched at all. Amounts are integers (µSIM); the matches are apportioned in whole
 * µSIM so that they sum to the pool exactly.
 */

/** What each funder (key) gave each good (study), in µSIM. One key counts once per good: give its total. */
export type Contributions = ReadonlyMap<string, ReadonlyMap<string, number>>;

/**
 * A good's unscaled match, (Σ √cⱼ)² − Σ cⱼ, computed as 2·Σ_{j<k} √cⱼ·√cₖ: a sum of positive terms, so it is exactly
 * 0 for a single funder and loses no precision to cancellation when one funder dominates. The gifts are summed
 * smallest first: floating-point sums depend on their order, and the match must not depend on the funders' order.
 */
export function rawMatch(gifts: Iterable<number>): number {
  let roots = 0;
  let cross = 0;
  for (const c of [...gifts].filter((c) => c > 0).sort((a, b) => a - b)) {
    const r = Math.sqrt(c);
    cross += r * roots;
    roots += r;
  }
  return 2 * cross;
}

const byId = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Shares `pool` µSIM among the goods in proportion to their raw matches, by largest remainder (ties to the smaller
 * id), so the matches are whole µSIM and sum to the pool exactly. Every good of `contributions` is in the result; all
 * get 0 when no raw match is positive (nobody has two funders) or the pool is empty. Independent of map order.
 */
export function quadraticMatch(contributions: Contributions, pool: number): Map<string, number> {
  const ids = [...contributions.keys()].sort(byId);
  const raw = ids.map((id) => rawMatch(contributions.get(id)!.values()));
  const total = raw.reduce((s, r) => s + r, 0);
  const out = new Map(ids.map((id) => [id, 0]));
  if (!(total > 0) || !(pool > 0)) return out;
  const exact = raw.map((r) => (pool * r) / total);
  const whole = exact.map((x) => Math.floor(x));
  let left = pool - whole.reduce((s, x) => s + x, 0);
  // Floating-point shares can sum a hair past the pool: take the excess back from the smallest remainders.
  const order = ids.map((_, i) => i).sort((a, b) => exact[b]! - whole[b]! - (exact[a]! - whole[a]!) || a - b);
  for (let k = order.length - 1; left < 0 && k >= 0; k--) {
    const i = order[k]!;
    if (whole[i]! > 0) {
      whole[i]!--;
      left++;
    }
  }
  for (let k = 0; left > 0; k = (k + 1) % order.length) {
    const i = order[k]!;
    if (raw[i]! > 0) {
      whole[i]!++;
      left--;
    }
  }
  for (const [i, id] of ids.entries()) out.set(id, whole[i]!);
  return out;
}

/** The `limit` goods with the largest raw matches (ties to the smaller id): what one round can pay out. */
export function largestMatches(contributions: Contributions, limit: number): Contributions {
  const ranked = [...contributions.keys()]
    .map((id) => ({ id, raw: rawMatch(contributions.get(id)!.values()) }))
    .sort((a, b) => b.raw - a.raw || byId(a.id, b.id))
    .slice(0, Math.max(0, limit));
  return new Map(ranked.map(({ id }) => [id, contributions.get(id)!]));
}

/**
 * One interval of a local market. Energies are kWh in the interval, prices currency per kWh. Agents with net > 0
 * are buyers of that amount, agents with net < 0 sellers of −net; the rest sit out. The grid stands behind every
 * market: it sells at `retail` and buys at `feedIn` whatever the mechanism leaves unmatched.
 */
export interface IntervalBook {
  readonly n: number;
  readonly net: Float64Array;
  /** Buyers' limit prices (read only where net > 0). */
  readonly bid: Float64Array;
  /** Sellers' limit prices (read only where net < 0). */
  readonly ask: Float64Array;
  readonly retail: number;
  readonly feedIn: number;
}

/** What a market settled among peers; everything else settles with the grid. Reset by the market each interval. */
export interface Clearing {
  /** P2P energy per agent: > 0 bought, < 0 sold. */
  readonly traded: Float64Array;
  /** P2P money per agent: > 0 paid, < 0 received. */
  readonly paid: Float64Array;
  /** Σ energy bought from peers, and the money it cost (their ratio is the volume-weighted price). */
  volume: number;
  value: number;
}

/** A market mechanism: clears one interval into `out`. Created once per epoch so it can keep scratch space. */
export type ClearFn = (book: IntervalBook, out: Clearing) => void;

export function resetClearing(out: Clearing): void {
  out.traded.fill(0);
  out.paid.fill(0);
  out.volume = 0;
  out.value = 0;
}

/** Totals of supply and demand in the book. */
export function totals(book: IntervalBook): { supply: number; demand: number } {
  let supply = 0;
  let demand = 0;
  const { net, n } = book;
  for (let i = 0; i < n; i++) {
    const x = net[i]!;
    if (x > 0) demand += x;
    else supply -= x;
  }
  return { supply, demand };
}

/**
 * Pro-rata pooled trade at one internal price: the short side trades everything, the long side trades in
 * proportion to what it offered. Shared by the mid-market-rate and bill-sharing rules.
 */
export function clearProRata(book: IntervalBook, out: Clearing, price: number): void {
  resetClearing(out);
  const { supply, demand } = totals(book);
  const matched = Math.min(supply, demand);
  if (matched <= 0) return;
  const buyShare = matched / demand;
  const sellShare = matched / supply;
  const { net, n } = book;
  for (let i = 0; i < n; i++) {
    const x = net[i]!;
    const q = x > 0 ? x * buyShare : x < 0 ? x * sellShare : 0;
    out.traded[i] = q;
    out.paid[i] = q * price;
  }
  out.volume = matched;
  out.value = matched * price;
}

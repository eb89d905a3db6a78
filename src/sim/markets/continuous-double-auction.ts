import type { Rng } from '../rng.ts';
import { type ClearFn, resetClearing } from './types.ts';

/**
 * Continuous double auction with price-time priority. Orders arrive one by one in a random (seeded) order within
 * the interval; an arriving order trades against the best resting orders on the other side while prices cross,
 * each fill at the resting order's price, and its remainder rests in the book. What rests at the end of the
 * interval settles with the grid.
 *
 * Each side of the book is an array kept sorted with the best order at the end, so taking the best is a pop and a
 * new order is a binary-search insert; among equal prices the older order sits nearer the end and fills first.
 */
export function createContinuousDoubleAuction(n: number, rng: Rng): ClearFn {
  const arrivals = new Uint32Array(n);
  const bids = new Uint32Array(n); // ascending price: best (highest) last
  const asks = new Uint32Array(n); // descending price: best (lowest) last
  const left = new Float64Array(n);
  return (book, out) => {
    resetClearing(out);
    const { net, bid, ask } = book;
    let m = 0;
    for (let i = 0; i < n; i++) if (net[i] !== 0) arrivals[m++] = i;
    for (let i = m - 1; i > 0; i--) {
      const j = Math.floor(rng.uniform() * (i + 1));
      const t = arrivals[i]!;
      arrivals[i] = arrivals[j]!;
      arrivals[j] = t;
    }
    let nBids = 0;
    let nAsks = 0;
    let volume = 0;
    let value = 0;
    for (let a = 0; a < m; a++) {
      const agent = arrivals[a]!;
      const x = net[agent]!;
      if (x > 0) {
        let want = x;
        const limit = bid[agent]!;
        while (want > 0 && nAsks > 0) {
          const seller = asks[nAsks - 1]!;
          const p = ask[seller]!;
          if (p > limit) break;
          const q = Math.min(want, left[seller]!);
          fill(out, agent, seller, q, p);
          volume += q;
          value += q * p;
          want -= q;
          left[seller]! -= q;
          if (left[seller]! <= 0) nAsks--;
        }
        if (want > 0) {
          left[agent] = want;
          // First index whose price is ≥ limit: the newcomer goes below older equals.
          let lo = 0;
          let hi = nBids;
          while (lo < hi) {
            const mid = (lo + hi) >>> 1;
            if (bid[bids[mid]!]! < limit) lo = mid + 1;
            else hi = mid;
          }
          bids.copyWithin(lo + 1, lo, nBids);
          bids[lo] = agent;
          nBids++;
        }
      } else {
        let have = -x;
        const limit = ask[agent]!;
        while (have > 0 && nBids > 0) {
          const buyer = bids[nBids - 1]!;
          const p = bid[buyer]!;
          if (p < limit) break;
          const q = Math.min(have, left[buyer]!);
          fill(out, buyer, agent, q, p);
          volume += q;
          value += q * p;
          have -= q;
          left[buyer]! -= q;
          if (left[buyer]! <= 0) nBids--;
        }
        if (have > 0) {
          left[agent] = have;
          // First index whose price is ≤ limit (descending array): the newcomer goes below older equals.
          let lo = 0;
          let hi = nAsks;
          while (lo < hi) {
            const mid = (lo + hi) >>> 1;
            if (ask[asks[mid]!]! > limit) lo = mid + 1;
            else hi = mid;
          }
          asks.copyWithin(lo + 1, lo, nAsks);
          asks[lo] = agent;
          nAsks++;
        }
      }
    }
    out.volume = volume;
    out.value = value;
  };
}

function fill(out: Parameters<ClearFn>[1], buyer: number, seller: number, q: number, price: number): void {
  out.traded[buyer]! += q;
  out.traded[seller]! -= q;
  out.paid[buyer]! += q * price;
  out.paid[seller]! -= q * price;
}

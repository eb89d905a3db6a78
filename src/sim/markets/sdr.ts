import { type ClearFn, clearProRata, resetClearing, totals } from './types.ts';

/**
 * The internal selling price of supply-demand-ratio pricing (Liu et al., 2017). SDR = supply / demand; for
 * SDR ≤ 1, P_sell = λ_buy·λ_sell / ((λ_buy − λ_sell)·SDR + λ_sell), falling from λ_buy at SDR 0 to λ_sell at 1;
 * above 1 it stays at λ_sell. Computed as the same value's weighted harmonic mean 1 / (SDR/λ_sell + (1 − SDR)/λ_buy),
 * which stays within [λ_sell, λ_buy] in floating point too: the product form underflows for subnormal prices and
 * could then land above λ_buy. A zero price makes its term infinite and P_sell 0, as the product form gives.
 */
export function sdrSellPrice(sdr: number, retail: number, feedIn: number): number {
  if (sdr >= 1) return feedIn;
  if (sdr <= 0) return retail;
  return 1 / (sdr / feedIn + (1 - sdr) / retail);
}

/** The internal buying price: P_buy = P_sell·SDR + λ_buy·(1 − SDR) for SDR ≤ 1, else λ_sell. */
export function sdrBuyPrice(sdr: number, retail: number, feedIn: number): number {
  if (sdr >= 1) return feedIn;
  return sdrSellPrice(sdr, retail, feedIn) * sdr + retail * (1 - sdr);
}

/**
 * SDR pricing. Buyers pay P_buy for all their demand — which is P_sell for their SDR share bought from peers plus
 * retail for the rest — and sellers receive P_sell for what peers take; a surplus (SDR > 1) is exported at λ_sell.
 * In quantities that is the pro-rata pool (the short side trades all of it) at the internal price P_sell.
 */
export function createSdr(): ClearFn {
  return (book, out) => {
    const { supply, demand } = totals(book);
    if (supply <= 0 || demand <= 0) return resetClearing(out);
    clearProRata(book, out, sdrSellPrice(supply / demand, book.retail, book.feedIn));
  };
}

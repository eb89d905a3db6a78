import type { Mechanism } from '../../models/scenario.ts';
import type { Rng } from '../rng.ts';
import { createBillSharing } from './bill-sharing.ts';
import { createContinuousDoubleAuction } from './continuous-double-auction.ts';
import { createMidMarketRate } from './mid-market-rate.ts';
import { createNone } from './none.ts';
import { createSdr } from './sdr.ts';
import type { ClearFn } from './types.ts';
import { createUniformPrice } from './uniform-price.ts';

export type { ClearFn, Clearing, IntervalBook } from './types.ts';

export interface MarketParams {
  /** Number of agents. */
  n: number;
  /** k of the k-double auction. */
  k: number;
  /** Randomness for mechanisms with chance in them (order arrival in the CDA). */
  rng: Rng;
}

export function createMarket(mechanism: Mechanism, p: MarketParams): ClearFn {
  switch (mechanism) {
    case 'none':
      return createNone();
    case 'uniform-price':
      return createUniformPrice(p.n, p.k);
    case 'continuous-double-auction':
      return createContinuousDoubleAuction(p.n, p.rng);
    case 'sdr':
      return createSdr();
    case 'mid-market-rate':
      return createMidMarketRate();
    case 'bill-sharing':
      return createBillSharing();
  }
}

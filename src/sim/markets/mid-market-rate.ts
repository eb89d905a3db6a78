import { type ClearFn, clearProRata } from './types.ts';

/**
 * Mid-market rate (Long et al., 2017): peers trade at the midpoint of retail and feed-in; when supply and demand
 * differ, the long side trades pro rata and settles the rest with the grid.
 */
export function createMidMarketRate(): ClearFn {
  return (book, out) => clearProRata(book, out, (book.retail + book.feedIn) / 2);
}

import { type ClearFn, clearProRata } from './types.ts';

/**
 * Bill sharing (Long et al., 2017): the community settles its net position with the grid as one meter, and the
 * bill is shared — the import cost among buyers in proportion to their demand, the export revenue among sellers in
 * proportion to their supply. Energy exchanged inside the community therefore changes hands at price zero.
 */
export function createBillSharing(): ClearFn {
  return (book, out) => clearProRata(book, out, 0);
}

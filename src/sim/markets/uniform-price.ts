import { type ClearFn, resetClearing } from './types.ts';

/**
 * Sealed-bid k-double auction (Satterthwaite & Williams): bids sorted high to low, asks low to high, matched while
 * the bid covers the ask; every matched unit trades at one price k·b + (1 − k)·a set by the marginal pair, which
 * every matched buyer can afford and every matched seller accepts. Ties break by agent index, so clearing is
 * deterministic.
 */
export function createUniformPrice(n: number, k: number): ClearFn {
  const buyers = new Uint32Array(n);
  const sellers = new Uint32Array(n);
  return (book, out) => {
    resetClearing(out);
    const { net, bid, ask } = book;
    let nb = 0;
    let ns = 0;
    for (let i = 0; i < n; i++) {
      const x = net[i]!;
      if (x > 0) buyers[nb++] = i;
      else if (x < 0) sellers[ns++] = i;
    }
    if (nb === 0 || ns === 0) return;
    const b = buyers.subarray(0, nb).sort((x, y) => bid[y]! - bid[x]! || x - y);
    const s = sellers.subarray(0, ns).sort((x, y) => ask[x]! - ask[y]! || x - y);
    let i = 0;
    let j = 0;
    let wantB = net[b[0]!]!;
    let haveS = -net[s[0]!]!;
    let marginalBid = 0;
    let marginalAsk = 0;
    let volume = 0;
    while (i < nb && j < ns) {
      const buyer = b[i]!;
      const seller = s[j]!;
      if (bid[buyer]! < ask[seller]!) break;
      const q = Math.min(wantB, haveS);
      out.traded[buyer]! += q;
      out.traded[seller]! -= q;
      volume += q;
      marginalBid = bid[buyer]!;
      marginalAsk = ask[seller]!;
      wantB -= q;
      haveS -= q;
      if (wantB <= 0) {
        i++;
        if (i < nb) wantB = net[b[i]!]!;
      }
      if (haveS <= 0) {
        j++;
        if (j < ns) haveS = -net[s[j]!]!;
      }
    }
    if (volume === 0) return;
    const price = k * marginalBid + (1 - k) * marginalAsk;
    for (let x = 0; x <= i && x < nb; x++) out.paid[b[x]!] = out.traded[b[x]!]! * price;
    for (let x = 0; x <= j && x < ns; x++) out.paid[s[x]!] = out.traded[s[x]!]! * price;
    out.volume = volume;
    out.value = volume * price;
  };
}

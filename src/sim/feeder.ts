import type { Scenario } from '../models/scenario.ts';

type FeederSpec = NonNullable<Scenario['feeder']>;

/**
 * Voltage along a radial feeder by LinDistFlow (Baran & Wu, 1989), which drops the loss terms of DistFlow and is
 * linear in squared voltage: U_k = U_{k−1} − 2(r·P_k + x·Q_k)/V², where P_k, Q_k are the flows through segment k
 * (the sum of everything downstream). Node 0 is the transformer's LV busbar, held at 1 pu; balanced
 * three-phase feeders are assumed. Several identical feeders may leave the same busbar.
 */
export class FeederModel {
  private readonly p: Float64Array;
  private readonly q: Float64Array;
  private readonly r: number;
  private readonly x: number;
  private readonly vSquared: number;
  readonly tanPhi: number;
  vMin = 1;
  vMax = 1;

  private readonly nodes: number;

  constructor(spec: FeederSpec) {
    this.nodes = spec.nodes;
    this.p = new Float64Array(spec.count * (spec.nodes + 1));
    this.q = new Float64Array(spec.count * (spec.nodes + 1));
    this.r = spec.r_ohm_per_km * spec.segment_km;
    this.x = spec.x_ohm_per_km * spec.segment_km;
    this.vSquared = spec.nominal_voltage_v * spec.nominal_voltage_v;
    this.tanPhi = Math.tan(Math.acos(spec.power_factor));
  }

  reset(): void {
    this.p.fill(0);
    this.q.fill(0);
  }

  /** Adds a withdrawal at a node of a feeder: kW (negative = injection) and kvar. */
  add(feeder: number, node: number, pKw: number, qKvar: number): void {
    const at = feeder * (this.nodes + 1) + node;
    this.p[at]! += pKw;
    this.q[at]! += qKvar;
  }

  /** Solves the voltages (pu) and records their extremes in vMin / vMax. */
  solve(): void {
    const nodes = this.nodes;
    const scale = 2000 / this.vSquared; // kW → W, in per unit of V²
    let vMin = 1;
    let vMax = 1;
    for (let base = 0; base < this.p.length; base += nodes + 1) {
      let flowP = 0;
      let flowQ = 0;
      for (let k = 1; k <= nodes; k++) {
        flowP += this.p[base + k]!;
        flowQ += this.q[base + k]!;
      }
      let u = 1;
      for (let k = 1; k <= nodes; k++) {
        u -= scale * (this.r * flowP + this.x * flowQ);
        const v = Math.sqrt(Math.max(u, 0));
        if (v < vMin) vMin = v;
        if (v > vMax) vMax = v;
        flowP -= this.p[base + k]!;
        flowQ -= this.q[base + k]!;
      }
    }
    this.vMin = vMin;
    this.vMax = vMax;
  }
}

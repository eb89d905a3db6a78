import type { EpochResult } from '../models/result.ts';
import type { Scenario } from '../models/scenario.ts';
import { runEpoch } from '../sim/epoch.ts';

/** Piscina task: one epoch per call, on a worker thread. */
export default function run(scenario: Scenario): EpochResult {
  return runEpoch(scenario);
}

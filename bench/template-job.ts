import { readFileSync } from 'node:fs';
import { type Job, ResourceLimits } from '../src/models/job.ts';
import { Scenario } from '../src/models/scenario.ts';

/**
 * One grid epoch's job spec, shared by every simulated job of a bench (only ids, image, limits and terms differ):
 * placement and the vote read no more of it.
 */
export function templateJob(image: string): Job {
  return {
    job_id: 'template',
    study_id: 'template',
    image,
    input_digest: '0'.repeat(64),
    epochs: [
      {
        epoch_id: '0'.repeat(16),
        subset: 0,
        run: 1,
        params: {},
        scenario: Scenario.parse(
          JSON.parse(readFileSync(new URL('../examples/suburb-summer.json', import.meta.url), 'utf8')),
        ),
      },
    ],
    limits: ResourceLimits.parse({}),
    priority: 0,
  };
}

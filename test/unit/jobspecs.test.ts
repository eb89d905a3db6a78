import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { buildSubmission } from '../../src/coordinator/intake.ts';
import { DEFAULT_RETRY } from '../../src/coordinator/job-state.ts';
import {
  decodeStudyJobs,
  encodeStudyJobs,
  parseStudyJobs,
  StudyJobs,
  studyJobsJson,
} from '../../src/coordinator/jobspecs.ts';
import { digestOf } from '../../src/models/digest.ts';
import { Study } from '../../src/models/study.ts';
import { baseScenario } from './arbitraries.ts';

function submission(runs: number) {
  const study = Study.parse({
    name: 's',
    scenario: baseScenario(),
    runs,
    seed: 3,
    sweep: [{ name: 'market.mechanism', values: ['none', 'sdr', 'uniform-price'] }],
  });
  return buildSubmission(
    { study, target_job_seconds: 0 },
    { studyId: 'st1', image: 'img', now: 1, retry: DEFAULT_RETRY },
  );
}

describe('stored jobs', () => {
  it('round-trip exactly, each sweep point stored once and shared again by its epochs', async () => {
    const { jobs } = submission(4);
    const json = await studyJobsJson('st1', jobs);
    expect(JSON.parse(json)).toEqual(encodeStudyJobs('st1', jobs));
    const stored = StudyJobs.parse(JSON.parse(json));
    expect(stored.points).toHaveLength(3);
    expect(stored.jobs.every((j) => j.epochs.every((e) => e.scenario === undefined))).toBe(true);
    const decoded = decodeStudyJobs(stored);
    expect(decoded).toEqual(jobs);
    // As a restart reads it: gzipped, checked a job at a time.
    expect(await parseStudyJobs(gzipSync(json), 'st1')).toEqual(jobs);
    await expect(parseStudyJobs(gzipSync(json), 'other')).rejects.toThrow(/holds a job of study st1/);
    const broken = JSON.parse(json);
    broken.jobs[1].input_digest = 'nope';
    await expect(parseStudyJobs(gzipSync(JSON.stringify(broken)), 'st1')).rejects.toThrow();
    for (const rec of decoded)
      for (const e of rec.job.epochs) expect(digestOf(e.scenario).slice(0, 16)).toBe(e.epoch_id);
    // Epochs of one point share the point's scenario parts (memory after a restart stays what it was).
    const sdr = decoded.filter((r) => r.job.epochs[0]!.subset === 1);
    expect(sdr[0]!.job.epochs[0]!.scenario.community).toBe(sdr[1]!.job.epochs[0]!.scenario.community);
  });

  it('keep an epoch whose scenario is not its point with another seed in full', () => {
    const { jobs } = submission(2);
    // jobs[1] is the second run of the first point: its scenario should be the first run's with another seed.
    const odd = structuredClone(jobs[1]!);
    odd.job.epochs[0]!.scenario = { ...odd.job.epochs[0]!.scenario, name: 'different' };
    const records = [jobs[0]!, odd, ...jobs.slice(2)];
    const stored = encodeStudyJobs('st1', records);
    expect(stored.jobs[1]!.epochs[0]!.scenario).toMatchObject({ name: 'different' });
    expect(stored.jobs[0]!.epochs[0]!.scenario).toBeUndefined();
    expect(decodeStudyJobs(StudyJobs.parse(JSON.parse(JSON.stringify(stored))))).toEqual(records);
  });

  it('load the first format, each old record as executions', async () => {
    const { jobs } = submission(1);
    const rec = jobs[0]!;
    const old = {
      job: rec.job,
      status: 'assigned',
      attempt: 2,
      max_attempts: 3,
      worker_id: 'w2',
      lease_until: 99,
      not_before: 1,
      queue_deadline: null,
      enqueued_at: 1,
      history: [{ attempt: 1, worker_id: 'w1', ended: 'oom', reason: 'big', at: 5 }],
      result: null,
      updated_at: 7,
    };
    const blob = gzipSync(JSON.stringify({ study_id: 'st1', jobs: [old] }));
    const [loaded] = await parseStudyJobs(blob, 'st1');
    expect(loaded).toMatchObject({ status: 'assigned', attempts: 2, failures: 1, job: rec.job });
    expect(loaded!.executions.map((e) => [e.worker_id, e.ended])).toEqual([
      ['w1', 'oom'],
      ['w2', null],
    ]);
  });
});

import { createUser } from '@nats-io/nkeys';
import canonicalize from 'canonicalize';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { batchSigned, verifyResult } from '../../src/coordinator/verify.ts';
import { claimsOf, type JobResult, ResultBatch } from '../../src/models/api.ts';
import { canonicalJson, digestOf } from '../../src/models/digest.ts';
import { type Job, jobInput, outputDigest } from '../../src/models/job.ts';
import { identityFrom } from '../../src/transport/identity.ts';
import { runJob } from '../../src/worker/epoch-runner.ts';
import { ResultBatcher } from '../../src/worker/result-batcher.ts';
import { baseScenario, parseScenario } from './arbitraries.ts';

describe('canonical JSON', () => {
  it('is byte for byte the RFC 8785 reference implementation on JSON values', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(canonicalJson(v)).toBe(canonicalize(v));
      }),
      { numRuns: 2000 },
    );
  });

  it('sorts keys by UTF-16 code units and writes numbers the ECMAScript way', () => {
    expect(canonicalJson({ é: 1, e: 2, Z: 3, a: [1e21, 1e-7, -0, 0.1 + 0.2] })).toBe(
      '{"Z":3,"a":[1e+21,1e-7,0,0.30000000000000004],"e":2,"é":1}',
    );
  });

  it('refuses what JSON cannot represent instead of writing null', () => {
    expect(() => canonicalJson({ a: Number.NaN })).toThrow();
    expect(() => canonicalJson([Number.POSITIVE_INFINITY])).toThrow();
  });
});

/** A job of two epochs, the output a worker would get for it, and the result it would report. */
function fixture() {
  const epochs = [1, 2].map((seed, i) => {
    const scenario = parseScenario(baseScenario({ seed }));
    return { epoch_id: digestOf(scenario).slice(0, 16), subset: 0, run: i + 1, params: {}, scenario };
  });
  const job: Job = {
    job_id: 's1-00000',
    study_id: 's1',
    image: 'sha256:abc',
    input_digest: digestOf(jobInput('s1-00000', epochs)),
    epochs,
    limits: { memory_mb: 512, cpus: 1, pids: 64, timeout_s: 60 },
    priority: 0,
  };
  const output = runJob(jobInput(job.job_id, epochs));
  const result: JobResult = {
    job_id: job.job_id,
    study_id: job.study_id,
    attempt: 1,
    image: job.image,
    input_digest: job.input_digest,
    output_digest: outputDigest(output),
    status: 'ok',
    reason: null,
    exit_code: 0,
    results: output.results,
    output_object: null,
    usage: { wall_ms: 5, cpu_ms: 4, max_memory_mb: null },
    started_at: 0,
    finished_at: 5,
    stdout_tail: '',
    stderr_tail: '',
  };
  return { job, output, result };
}

describe('result verification', () => {
  it('accepts a sound result', () => {
    const { job, output, result } = fixture();
    expect(verifyResult(job, result, output)).toBeUndefined();
  });

  it('names what is wrong with a result that does not match its job', () => {
    const { job, output, result } = fixture();
    expect(verifyResult(job, { ...result, image: 'sha256:other' }, output)).toMatch(/ran image sha256:other/);
    expect(verifyResult(job, { ...result, input_digest: '0'.repeat(64) }, output)).toMatch(/input digest/);
    expect(verifyResult(job, result, null)).toBe('no output');
    const swapped = { ...output, results: [...output.results].reverse() };
    expect(verifyResult(job, { ...result, output_digest: outputDigest(swapped) }, swapped)).toMatch(
      /output epochs differ/,
    );
    expect(verifyResult(job, { ...result, output_digest: '0'.repeat(64) }, output)).toMatch(/output digest/);
  });

  it('catches a metric changed after the epoch digest was computed, even with a matching output digest', () => {
    const { job, output, result } = fixture();
    const first = output.results[0]!;
    const forged = {
      ...output,
      results: [
        {
          ...first,
          result: {
            ...first.result,
            metrics: { ...first.result.metrics, load_kwh: first.result.metrics.load_kwh + 1 },
          },
        },
        ...output.results.slice(1),
      ],
    };
    // The output digest covers epoch digests, so it still matches; the epoch's own digest does not.
    expect(outputDigest(forged)).toBe(result.output_digest);
    expect(verifyResult(job, result, forged)).toMatch(/result digest does not match its content/);
  });

  it('a batch verifies only with the key of the worker it names and the claims as signed', () => {
    const { result } = fixture();
    const worker = identityFrom(createUser());
    const other = identityFrom(createUser());
    const results = [result, { ...result, job_id: 's1-00001' }];
    const batch = ResultBatch.parse({
      batch_id: 'b1',
      worker_id: worker.workerId,
      results,
      signature: worker.sign(claimsOf(results)),
    });
    expect(batchSigned(batch)).toBe(true);
    expect(batchSigned({ ...batch, worker_id: other.workerId })).toBe(false);
    expect(batchSigned({ ...batch, results: [{ ...result, attempt: 2 }, results[1]!] })).toBe(false);
    expect(batchSigned({ ...batch, results: [...results].reverse() })).toBe(false);
    expect(batchSigned({ ...batch, signature: 'not base64 at all' })).toBe(false);
  });
});

describe('result batching (group commit)', () => {
  const setup = () => {
    const worker = identityFrom(createUser());
    const sent: { batch: ResultBatch; release: () => void; fail: (e: Error) => void }[] = [];
    const batcher = new ResultBatcher({
      workerId: worker.workerId,
      sign: (claims) => worker.sign(claims),
      maxBytes: 20_000,
      send: (body) =>
        new Promise<void>((resolve, reject) => {
          const batch = ResultBatch.parse(JSON.parse(new TextDecoder().decode(body)));
          sent.push({ batch, release: resolve, fail: reject });
        }),
    });
    const { result } = fixture();
    const small = (n: number): JobResult => ({
      ...result,
      job_id: `s1-${n}`,
      results: null,
      status: 'failed',
    });
    return { batcher, sent, small };
  };
  const turn = () => new Promise((r) => setImmediate(r));

  it('sends results finished in the same turn together, and those finished while it is stored in the next batch', async () => {
    const { batcher, sent, small } = setup();
    const first = [batcher.add(small(1)), batcher.add(small(2))];
    await turn();
    expect(sent.map((s) => s.batch.results.length)).toEqual([2]);
    expect(batchSigned(sent[0]!.batch)).toBe(true);
    const later = [batcher.add(small(3)), batcher.add(small(4))];
    await turn();
    expect(sent).toHaveLength(1); // waits for the first batch to be stored
    sent[0]!.release();
    await Promise.all(first);
    await turn();
    expect(sent.map((s) => s.batch.results.map((r) => r.job_id))).toEqual([
      ['s1-1', 's1-2'],
      ['s1-3', 's1-4'],
    ]);
    sent[1]!.release();
    await Promise.all(later);
  });

  it('never lets a batch pass its byte limit, and a failed store fails the results in it', async () => {
    const { batcher, sent, small } = setup();
    const size = JSON.stringify(small(1)).length;
    const n = Math.ceil(20_000 / size) + 2;
    const all = Array.from({ length: n }, (_, i) => batcher.add(small(i)));
    await turn();
    // The first batch filled up and went at once; the rest waits for it to be stored.
    expect(sent).toHaveLength(1);
    expect(JSON.stringify(sent[0]!.batch.results).length).toBeLessThanOrEqual(20_000);
    sent[0]!.release();
    await turn();
    expect(sent).toHaveLength(2);
    expect(sent.flatMap((s) => s.batch.results).map((r) => r.job_id)).toEqual(
      Array.from({ length: n }, (_, i) => `s1-${i}`),
    );
    sent[1]!.fail(new Error('stream unavailable'));
    const settled = await Promise.allSettled(all);
    const first = sent[0]!.batch.results.length;
    expect(settled.slice(0, first).every((s) => s.status === 'fulfilled')).toBe(true);
    expect(settled.slice(first).map((s) => s.status === 'rejected' && String(s.reason))).toEqual(
      Array(n - first).fill('Error: stream unavailable'),
    );
  });
});

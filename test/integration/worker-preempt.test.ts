// A real worker agent preempting its own public-goods attempt for a paid assignment: a one-slot WorkerAgent on the
// process executor, on an embedded nats-server, assigned to over NATS exactly as the coordinator's dispatcher does.
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createUser } from '@nats-io/nkeys';
import type { NatsConnection } from '@nats-io/transport-node';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Assignment,
  AssignReply,
  type ExecutionRef,
  type JobResult,
  ResultBatch,
} from '../../src/models/api.ts';
import { digestOf } from '../../src/models/digest.ts';
import { Job, type JobInput, jobInput } from '../../src/models/job.ts';
import { connectNats, decode } from '../../src/transport/connect.ts';
import { identityFrom } from '../../src/transport/identity.ts';
import { type EmbeddedNats, startEmbeddedNats } from '../../src/transport/nats-server.ts';
import { ensureResources } from '../../src/transport/resources.ts';
import { subjects } from '../../src/transport/subjects.ts';
import { workerBus } from '../../src/transport/worker-bus.ts';
import { WorkerAgent } from '../../src/worker/agent.ts';
import { createProcessExecutor } from '../../src/worker/executors/process.ts';
import type { Executor } from '../../src/worker/executors/types.ts';
import { limits, slowJob, smallJob } from '../fixtures/jobs.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'plurigrid-preempt-'));
/** Where the process executor makes each attempt's directory, just before it starts the runner. */
const jobsDir = join(dataDir, 'jobs');
let nats: EmbeddedNats;
let nc: NatsConnection;
let agent: WorkerAgent;
let executor: Executor;
/** Every result the worker published, by `<job_id>#<attempt>`. */
const results = new Map<string, JobResult>();

/** A job of `input`'s epochs, as the coordinator would assign it. */
function jobOf(input: JobInput, jobId: string): Job {
  const epochs = input.epochs.map((e, i) => ({ ...e, subset: 0, run: i + 1, params: {} }));
  return Job.parse({
    job_id: jobId,
    study_id: 'preempt-study',
    image: 'unused-by-the-process-executor',
    input_digest: digestOf(jobInput(jobId, epochs)),
    epochs,
    limits: limits(),
  });
}

/** Assigns one attempt the way the dispatcher does: a request on the worker's assign subject, answered per job. */
async function assign(job: Job, preempts: ExecutionRef[] = []) {
  const a: Assignment = { job, attempt: 1, lease_until: Date.now() + 60_000, preempts };
  const reply = await nc.request(subjects.assign(agent.workerId), JSON.stringify({ assignments: [a] }), {
    timeout: 5000,
  });
  const [answer] = decode(reply.data, AssignReply, 'assign reply').answers;
  return answer!;
}

async function until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  nats = await startEmbeddedNats({ dataDir });
  nc = await connectNats({ url: nats.url, name: 'preempt-test' });
  await ensureResources(nc);
  const identity = identityFrom(createUser());
  mkdirSync(jobsDir);
  executor = createProcessExecutor({ tmpDir: jobsDir });
  agent = new WorkerAgent({
    nc,
    bus: workerBus(nc, identity.workerId),
    identity,
    executor,
    log: pino({ level: 'silent' }),
    config: {
      name: 'preempt',
      slots: 1,
      cpus: 1,
      memory_mb: 1024,
      gpus: 0,
      labels: {},
      price_per_cpu_s: 0.001,
      offpeak: [{ from_hour: 0, to_hour: 24 }],
      tz: 'UTC',
      offpeak_price_per_cpu_s: 0.0005,
      heartbeatMs: 1000,
      version: 'test',
    },
  });
  // What goes to the RESULTS stream also reaches a plain subscriber on the subject.
  nc.subscribe(subjects.results(identity.workerId), {
    callback: (err, msg) => {
      if (err) return;
      for (const r of decode(msg.data, ResultBatch, 'result batch').results)
        results.set(`${r.job_id}#${r.attempt}`, r);
    },
  });
  await agent.start();
});

afterAll(async () => {
  await agent?.stop(1000);
  await executor?.close();
  await nc?.close();
  await nats?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('worker preemption', () => {
  it('a paid assignment that preempts a public-goods attempt takes its slot at once; the preempted one reports why', async () => {
    const commons = jobOf(slowJob, 'commons-1');
    const paid = jobOf(smallJob, 'paid-1');
    expect(await assign(commons)).toMatchObject({ accepted: true, reason: null });
    await until(() => readdirSync(jobsDir).length > 0, 'its runner to be started');

    // One slot, taken: paid work that does not name what to stop is declined.
    expect(await assign(paid)).toMatchObject({ accepted: false, reason: 'no free slot' });

    // Naming it: the public-goods attempt is told to stop and the slot is the paid job's, even while the public-goods
    // process is still being killed.
    const started = Date.now();
    expect(await assign(paid, [{ job_id: commons.job_id, attempt: 1 }])).toMatchObject({
      accepted: true,
      reason: null,
    });

    await until(() => results.has('commons-1#1') && results.has('paid-1#1'), 'both results');
    const preempted = results.get('commons-1#1')!;
    expect(preempted.status).toBe('cancelled');
    expect(preempted.reason).toBe('preempted: its slot went to paid job paid-1');
    expect(preempted.output_digest).toBeNull();
    expect(preempted.exit_code).toBeNull(); // killed, not exited
    const done = results.get('paid-1#1')!;
    expect(done.status, done.stderr_tail).toBe('ok');
    expect(done.output_digest).not.toBeNull();
    // Stopped, not left to run its several seconds out.
    expect(preempted.finished_at - started).toBeLessThan(3000);

    // Both over, the slot is free again for whatever comes next.
    expect(await assign(jobOf(smallJob, 'paid-2'))).toMatchObject({ accepted: true });
    await until(() => results.has('paid-2#1'), 'the next result');
    expect(results.get('paid-2#1')!.status).toBe('ok');
  });
});

/**
 * What a worker writes to the bus, each under its own key: result batches (RESULTS), its advert (KV `workers`), and
 * the parts of a large output (OUTPUTS). All are plain publishes the streams capture, acknowledged by JetStream on
 * the worker's inbox: a worker never needs the JetStream API, which only the coordinator may use (permissions.ts).
 */
import { type JetStreamClient, jetstream } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { subjects } from './subjects.ts';

/** Size of one part of a large output (well under the server's 1 MiB max_payload). */
export const OUTPUT_PART_BYTES = 256 * 1024;

export interface WorkerBus {
  /** Publishes a signed result batch; `msgID` makes a retried publish count once. */
  publishResults(body: string | Uint8Array, msgID: string): Promise<void>;
  /** Stores the worker's advert (its entry in KV `workers`). */
  putAdvert(json: string): Promise<void>;
  /** Removes the worker's advert (a worker leaving for good). */
  deleteAdvert(): Promise<void>;
  /** Stores a large output in parts; returns how many. */
  putOutput(jobId: string, attempt: number, bytes: Uint8Array): Promise<number>;
}

export function workerBus(nc: NatsConnection, workerId: string): WorkerBus {
  const js: JetStreamClient = jetstream(nc);
  const advert = subjects.workerAdvert(workerId);
  return {
    publishResults: async (body, msgID) => {
      await js.publish(subjects.results(workerId), body, { msgID });
    },
    putAdvert: async (json) => {
      await js.publish(advert, json);
    },
    deleteAdvert: async () => {
      // What KV's delete sends: an empty message marked as a deletion.
      const h = headers();
      h.set('KV-Operation', 'DEL');
      await js.publish(advert, new Uint8Array(), { headers: h });
    },
    putOutput: async (jobId, attempt, bytes) => {
      const parts = Math.max(1, Math.ceil(bytes.length / OUTPUT_PART_BYTES));
      for (let i = 0; i < parts; i++) {
        await js.publish(
          subjects.outputPart(workerId, jobId, attempt, i),
          bytes.subarray(i * OUTPUT_PART_BYTES, (i + 1) * OUTPUT_PART_BYTES),
          { msgID: `${workerId}.${jobId}.${attempt}.${i}` },
        );
      }
      return parts;
    },
  };
}

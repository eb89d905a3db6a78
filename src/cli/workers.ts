import Table from 'cli-table3';
import type { Command } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import { addConnectionOptions, type ConnectionFlags, openClient } from './connection.ts';
import { addKeyOptions, type KeyFlags, signerKey } from './keys.ts';

export function registerWorkers(program: Command): void {
  addConnectionOptions(
    program.command('workers').description('list the workers the coordinator can see'),
  ).action(async (opts: ConnectionFlags) => {
    const transport = await openClient(opts, 'plurigrid-workers');
    try {
      const { workers } = await new ApiClient(transport.nc).workers();
      const t = new Table({
        head: ['name', 'id', 'executor', 'slots free', 'running', 'price/cpu-s', 'state', 'seen'],
      });
      for (const w of workers) {
        t.push([
          w.name,
          `${w.worker_id.slice(0, 12)}…`,
          w.executor,
          `${w.slots_free}/${w.slots}`,
          w.running.length,
          w.price_per_cpu_s,
          w.draining ? 'draining' : 'ready',
          `${(w.last_seen_ms_ago / 1000).toFixed(1)} s ago`,
        ]);
      }
      process.stdout.write(`${workers.length ? t.toString() : 'no workers connected'}\n`);
    } finally {
      await transport.close();
    }
  });
}

export function registerCancel(program: Command): void {
  addKeyOptions(
    addConnectionOptions(
      program
        .command('cancel')
        .description(
          'cancel a study: queued jobs are dropped, running containers stopped (signed: your study only)',
        )
        .argument('<study>', 'study id'),
    ),
  ).action(async (studyId: string, opts: KeyFlags) => {
    const signer = await signerKey(opts);
    const transport = await openClient(opts, 'plurigrid-cancel');
    try {
      const s = await new ApiClient(transport.nc).cancel(studyId, signer.keyPair);
      process.stdout.write(`${s.study_id}: ${s.state}\n`);
    } finally {
      await transport.close();
    }
  });
}

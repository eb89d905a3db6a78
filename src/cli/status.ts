import Table from 'cli-table3';
import type { Command } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import type { StudyStatus } from '../models/api.ts';
import { addConnectionOptions, type ConnectionFlags, openClient } from './connection.ts';

export function statusLine(s: StudyStatus): string {
  const e = s.epochs;
  return `${s.study_id} ${s.name}: ${s.state} · epochs ${e.done}/${e.total} done, ${e.running} running, ${e.queued} queued, ${e.failed} failed`;
}

export function registerStatus(program: Command): void {
  addConnectionOptions(
    program
      .command('status')
      .description('show one study, or list recent studies')
      .argument('[study]', 'study id'),
  ).action(async (studyId: string | undefined, opts: ConnectionFlags) => {
    const transport = await openClient(opts, 'plurigrid-status');
    try {
      const api = new ApiClient(transport.nc);
      if (studyId) {
        const s = await api.status(studyId);
        process.stdout.write(`${statusLine(s)}\n`);
        for (const f of s.failures) process.stdout.write(`  ${f.job_id}: ${f.reasons.join('; ')}\n`);
        return;
      }
      const { studies } = await api.list();
      const t = new Table({
        head: ['study', 'name', 'state', 'done', 'running', 'queued', 'failed', 'submitted'],
      });
      for (const s of studies) {
        const e = s.epochs;
        t.push([
          s.study_id,
          s.name,
          s.state,
          `${e.done}/${e.total}`,
          e.running,
          e.queued,
          e.failed,
          new Date(s.submitted_at).toISOString(),
        ]);
      }
      process.stdout.write(`${studies.length ? t.toString() : 'no studies yet'}\n`);
    } finally {
      await transport.close();
    }
  });
}

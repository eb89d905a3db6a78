import { relative } from 'node:path';
import type { Command } from 'commander';
import type { ApiClient } from '../coordinator/client.ts';
import { ApiClient as Client } from '../coordinator/client.ts';
import { writeFilesAtomic } from '../study/files.ts';
import { buildOutputs } from '../study/outputs.ts';
import { addConnectionOptions, type ConnectionFlags, openClient } from './connection.ts';
import { comparisonTable } from './format.ts';

/** Fetches every accepted epoch, prints the comparison and, given a directory, writes the study outputs there. */
export async function writeStudyResults(
  api: ApiClient,
  studyId: string,
  out: string | undefined,
): Promise<void> {
  const { study, rows } = await api.allResults(studyId);
  const outputs = await buildOutputs(study, rows, new Date().toISOString());
  process.stdout.write(`${comparisonTable(outputs.points, outputs.paramNames)}\n`);
  process.stdout.write(
    `means over ${study.runs} runs; 95 % confidence intervals in aggregates.csv and report.html\n`,
  );
  if (out) {
    const written = await writeFilesAtomic(out, outputs.files);
    process.stdout.write(`wrote ${written.map((p) => relative(process.cwd(), p)).join(', ')}\n`);
  }
}

export function registerResults(program: Command): void {
  addConnectionOptions(
    program
      .command('results')
      .description(
        "fetch a study's results: the comparison table, and with --out the same files as `sim study`",
      )
      .argument('<study>', 'study id')
      .option('--out <dir>', 'directory for results.csv/.jsonl, aggregates and report.html'),
  ).action(async (studyId: string, opts: ConnectionFlags & { out?: string }) => {
    const transport = await openClient(opts, 'plurigrid-results');
    try {
      await writeStudyResults(new Client(transport.nc), studyId, opts.out);
    } finally {
      await transport.close();
    }
  });
}

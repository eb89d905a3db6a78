import { relative } from 'node:path';
import type { Command } from 'commander';
import { runStudyFile } from '../study/run-study.ts';
import { comparisonTable } from './format.ts';
import { intOption } from './options.ts';
import { progressBar } from './progress.ts';

interface Options {
  out: string;
  threads?: number;
}

/** Runs a study locally and prints its comparison table; shared by `sim study` and `demo`. */
export async function runStudyCommand(file: string, opts: Options): Promise<void> {
  const bar = progressBar('epochs');
  try {
    const run = await runStudyFile(file, {
      out: opts.out,
      ...(opts.threads ? { threads: opts.threads } : {}),
      onProgress: bar.update,
    });
    bar.stop();
    process.stdout.write(
      `${run.study}: ${run.epochs} epochs in ${run.seconds.toFixed(1)} s (${(run.epochs / run.seconds).toFixed(0)} epochs/s)\n`,
    );
    process.stdout.write(`${comparisonTable(run.points, run.paramNames)}\n`);
    process.stdout.write(
      `means over ${run.runs} runs; 95 % confidence intervals in aggregates.csv and report.html\n`,
    );
    process.stdout.write(`wrote ${run.written.map((p) => relative(process.cwd(), p)).join(', ')}\n`);
  } finally {
    bar.stop();
  }
}

export function registerSimStudy(sim: Command): void {
  sim
    .command('study')
    .description('run a study (sweep × Monte Carlo runs) locally on worker threads')
    .argument('<study>', 'study JSON file')
    .requiredOption('--out <dir>', 'directory for results.csv/.jsonl, aggregates and report.html')
    .option('--threads <n>', 'worker threads (default: one per core)', intOption('--threads', 1, 256))
    .action(runStudyCommand);
}

import { expandStudy } from './expand.ts';
import { loadStudyFile, writeFilesAtomic } from './files.ts';
import { buildOutputs, type StudyOutputs } from './outputs.ts';
import { runEpochsLocal } from './run-local.ts';

export interface StudyRunOptions {
  out: string;
  threads?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface StudyRun extends StudyOutputs {
  study: string;
  epochs: number;
  runs: number;
  written: string[];
  seconds: number;
}

/** Loads, validates and expands a study file, runs it on local worker threads, and writes its outputs. */
export async function runStudyFile(path: string, options: StudyRunOptions): Promise<StudyRun> {
  const { study, baseScenario } = await loadStudyFile(path);
  const epochs = expandStudy(study, baseScenario);
  const started = performance.now();
  const rows = await runEpochsLocal(epochs, {
    ...(options.threads ? { threads: options.threads } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const seconds = (performance.now() - started) / 1000;
  const outputs = await buildOutputs(study, rows, new Date().toISOString());
  const written = await writeFilesAtomic(options.out, outputs.files);
  return { ...outputs, study: study.name, epochs: epochs.length, runs: study.runs, written, seconds };
}
